# EKS with a small on-demand node group for cluster add-ons and the Karpenter controller;
# everything else (Ray heads, GPU workers) is brought by Karpenter from the NodePools in
# infra/deploy/karpenter.
module "eks" {
  # checkov:skip=CKV_TF_1: registry modules are pinned to an exact version (the registry serves a tag's content); a commit hash would bypass the registry
  source  = "terraform-aws-modules/eks/aws"
  version = "21.19.0"

  name               = var.name
  kubernetes_version = var.kubernetes_version

  endpoint_public_access       = length(var.endpoint_public_access_cidrs) > 0
  endpoint_public_access_cidrs = var.endpoint_public_access_cidrs
  endpoint_private_access      = true

  enable_cluster_creator_admin_permissions = true

  addons = {
    coredns = {}
    eks-pod-identity-agent = {
      before_compute = true
    }
    kube-proxy = {}
    vpc-cni = {
      before_compute = true
    }
  }

  vpc_id     = module.vpc.vpc_id
  subnet_ids = module.vpc.private_subnets

  eks_managed_node_groups = {
    system = {
      ami_type       = "BOTTLEROCKET_x86_64"
      instance_types = ["m7i.large"]
      capacity_type  = "ON_DEMAND"
      min_size       = 2
      max_size       = 3
      desired_size   = 2
      labels = {
        "karpenter.sh/controller" = "true"
      }
    }
  }

  node_security_group_tags = {
    "karpenter.sh/discovery" = var.name
  }
}

# Karpenter's controller role (Pod Identity), its node role, and the SQS queue plus
# EventBridge rules that deliver spot interruption notices (2 minutes' warning).
module "karpenter" {
  # checkov:skip=CKV_TF_1: registry modules are pinned to an exact version (the registry serves a tag's content); a commit hash would bypass the registry
  source  = "terraform-aws-modules/eks/aws//modules/karpenter"
  version = "21.19.0"

  cluster_name = module.eks.cluster_name

  node_iam_role_use_name_prefix   = false
  node_iam_role_name              = "${var.name}-karpenter-node"
  create_pod_identity_association = true

  node_iam_role_additional_policies = {
    AmazonSSMManagedInstanceCore = "arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore"
  }
}

resource "helm_release" "karpenter" {
  namespace  = "kube-system"
  name       = "karpenter"
  repository = "oci://public.ecr.aws/karpenter"
  chart      = "karpenter"
  version    = "1.6.0"
  wait       = false

  values = [yamlencode({
    nodeSelector = { "karpenter.sh/controller" = "true" }
    settings = {
      clusterName       = module.eks.cluster_name
      clusterEndpoint   = module.eks.cluster_endpoint
      interruptionQueue = module.karpenter.queue_name
    }
  })]
}

resource "helm_release" "kuberay_operator" {
  namespace        = "kuberay-system"
  create_namespace = true
  name             = "kuberay-operator"
  repository       = "https://ray-project.github.io/kuberay-helm/"
  chart            = "kuberay-operator"
  version          = "1.7.0"

  values = [yamlencode({
    nodeSelector = { "karpenter.sh/controller" = "true" }
  })]
}
