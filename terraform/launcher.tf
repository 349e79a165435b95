# For `ray up` (infra/deploy/ray-launcher/aws-gpu.yaml) instead of EKS: what Ray's launcher
# would otherwise create itself, too broadly (a head role with AmazonEC2FullAccess and
# AmazonS3FullAccess, a security group with SSH from 0.0.0.0/0).
locals {
  launcher      = var.enable_ray_launcher ? 1 : 0
  launcher_name = "${var.name}-ray"
  # cluster_name in aws-gpu.yaml: Ray tags every node it launches with it.
  ray_cluster_name = "slidebank"
}

# Nodes talk to each other (GCS, raylets, object transfers) and reach out over HTTPS
# (ECR, S3 through the gateway endpoint, SSM). No inbound rule from outside: SSH goes
# through SSM Session Manager (`ray up` with an ssh ProxyCommand) or a bastion you add.
resource "aws_security_group" "ray_nodes" {
  # checkov:skip=CKV2_AWS_5: attached by `ray up` to the instances it launches (named in aws-gpu.yaml), not by Terraform
  count       = local.launcher
  name        = "${local.launcher_name}-nodes"
  description = "Ray nodes started by ray up: node-to-node only, HTTPS out"
  vpc_id      = module.vpc.vpc_id
}

resource "aws_vpc_security_group_ingress_rule" "ray_nodes_self" {
  count                        = local.launcher
  description                  = "Ray node to Ray node, all ports"
  security_group_id            = aws_security_group.ray_nodes[0].id
  referenced_security_group_id = aws_security_group.ray_nodes[0].id
  ip_protocol                  = "-1"
}

resource "aws_vpc_security_group_egress_rule" "ray_nodes_self" {
  count                        = local.launcher
  description                  = "Ray node to Ray node, all ports"
  security_group_id            = aws_security_group.ray_nodes[0].id
  referenced_security_group_id = aws_security_group.ray_nodes[0].id
  ip_protocol                  = "-1"
}

resource "aws_vpc_security_group_egress_rule" "ray_nodes_https" {
  count             = local.launcher
  description       = "HTTPS out through the NAT (ECR, SSM, package mirrors)"
  security_group_id = aws_security_group.ray_nodes[0].id
  cidr_ipv4         = "0.0.0.0/0"
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
}

data "aws_iam_policy_document" "ec2_trust" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["ec2.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "ray_worker" {
  count              = local.launcher
  name               = "${local.launcher_name}-worker"
  assume_role_policy = data.aws_iam_policy_document.ec2_trust.json
}

# Workers read slides and write the store exactly as the EKS pods do.
resource "aws_iam_role_policy" "ray_worker_data" {
  count  = local.launcher
  name   = "slidebank-data"
  role   = aws_iam_role.ray_worker[0].id
  policy = data.aws_iam_policy_document.pods.json
}

resource "aws_iam_role" "ray_head" {
  count              = local.launcher
  name               = "${local.launcher_name}-head"
  assume_role_policy = data.aws_iam_policy_document.ec2_trust.json
}

resource "aws_iam_role_policy" "ray_head_data" {
  count  = local.launcher
  name   = "slidebank-data"
  role   = aws_iam_role.ray_head[0].id
  policy = data.aws_iam_policy_document.pods.json
}

# The autoscaler on the head starts and stops workers: only instances tagged with this
# cluster's name, only with the worker profile.
data "aws_iam_policy_document" "ray_head_autoscaler" {
  count = local.launcher
  statement {
    sid       = "Describe"
    actions   = ["ec2:DescribeInstances", "ec2:DescribeInstanceTypes", "ec2:DescribeSubnets", "ec2:DescribeSecurityGroups", "ec2:DescribeImages", "ec2:DescribeInstanceStatus"]
    resources = ["*"] # EC2 Describe actions support no resource-level scoping
  }
  # RunInstances authorises every resource the launch creates or uses. Ray tags only the
  # instance (ray-cluster-name), so only the instance is held to the tag; the volumes,
  # network interfaces and spot request of that same call cannot be tagged by it, and the
  # key pair Ray always names must be usable.
  statement {
    sid       = "LaunchTaggedWorkers"
    actions   = ["ec2:RunInstances"]
    resources = ["arn:aws:ec2:${var.region}:${data.aws_caller_identity.current.account_id}:instance/*"]
    condition {
      test     = "StringEquals"
      variable = "aws:RequestTag/ray-cluster-name"
      values   = [local.ray_cluster_name]
    }
  }
  statement {
    sid     = "LaunchWithTheirVolumesAndInterfaces"
    actions = ["ec2:RunInstances"]
    resources = [
      "arn:aws:ec2:${var.region}:${data.aws_caller_identity.current.account_id}:volume/*",
      "arn:aws:ec2:${var.region}:${data.aws_caller_identity.current.account_id}:network-interface/*",
      "arn:aws:ec2:${var.region}:${data.aws_caller_identity.current.account_id}:key-pair/*",
      "arn:aws:ec2:${var.region}:${data.aws_caller_identity.current.account_id}:spot-instances-request/*",
    ]
  }
  statement {
    sid       = "LaunchFromOurNetworkAndImages"
    actions   = ["ec2:RunInstances"]
    resources = concat(["arn:aws:ec2:${var.region}::image/*", "arn:aws:ec2:${var.region}:${data.aws_caller_identity.current.account_id}:security-group/${aws_security_group.ray_nodes[0].id}"], [for s in module.vpc.private_subnet_arns : s])
  }
  statement {
    sid       = "SpotWorkers"
    actions   = ["ec2:RequestSpotInstances", "ec2:CancelSpotInstanceRequests"]
    resources = ["arn:aws:ec2:${var.region}:${data.aws_caller_identity.current.account_id}:spot-instances-request/*"]
  }
  # Tags at launch, and Ray's later status tags on its own instances (which name only the
  # changed tag, not the cluster).
  statement {
    sid       = "TagAtLaunch"
    actions   = ["ec2:CreateTags"]
    resources = ["arn:aws:ec2:${var.region}:${data.aws_caller_identity.current.account_id}:instance/*"]
    condition {
      test     = "StringEquals"
      variable = "ec2:CreateAction"
      values   = ["RunInstances"]
    }
  }
  statement {
    sid       = "TagOwnWorkers"
    actions   = ["ec2:CreateTags"]
    resources = ["arn:aws:ec2:${var.region}:${data.aws_caller_identity.current.account_id}:instance/*"]
    condition {
      test     = "StringEquals"
      variable = "aws:ResourceTag/ray-cluster-name"
      values   = [local.ray_cluster_name]
    }
  }
  statement {
    sid       = "ManageOwnWorkers"
    actions   = ["ec2:TerminateInstances", "ec2:StopInstances", "ec2:StartInstances"]
    resources = ["arn:aws:ec2:${var.region}:${data.aws_caller_identity.current.account_id}:instance/*"]
    condition {
      test     = "StringEquals"
      variable = "aws:ResourceTag/ray-cluster-name"
      values   = [local.ray_cluster_name]
    }
  }
  statement {
    sid       = "PassWorkerRole"
    actions   = ["iam:PassRole"]
    resources = [aws_iam_role.ray_worker[0].arn]
  }
}

resource "aws_iam_role_policy" "ray_head_autoscaler" {
  count  = local.launcher
  name   = "ray-autoscaler"
  role   = aws_iam_role.ray_head[0].id
  policy = data.aws_iam_policy_document.ray_head_autoscaler[0].json
}

# `ray up` reaches nodes through SSM Session Manager (no inbound SSH rule).
resource "aws_iam_role_policy_attachment" "ray_ssm" {
  for_each   = var.enable_ray_launcher ? { head = "head", worker = "worker" } : {}
  role       = each.key == "head" ? aws_iam_role.ray_head[0].name : aws_iam_role.ray_worker[0].name
  policy_arn = "arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore"
}

resource "aws_iam_instance_profile" "ray_head" {
  count = local.launcher
  name  = "${local.launcher_name}-head"
  role  = aws_iam_role.ray_head[0].name
}

resource "aws_iam_instance_profile" "ray_worker" {
  count = local.launcher
  name  = "${local.launcher_name}-worker"
  role  = aws_iam_role.ray_worker[0].name
}
