# Private subnets for every node, one NAT gateway for image pulls and the internet, and
# an S3 gateway endpoint so slide reads never pass the NAT: a gateway endpoint costs
# nothing, while NAT processing would bill $0.045 per GB read (docs/cloud.md).
module "vpc" {
  # checkov:skip=CKV_TF_1: registry modules are pinned to an exact version (the registry serves a tag's content); a commit hash would bypass the registry
  source  = "terraform-aws-modules/vpc/aws"
  version = "6.6.1"

  name = var.name
  cidr = var.vpc_cidr
  azs  = var.availability_zones

  private_subnets = [for i, _ in var.availability_zones : cidrsubnet(var.vpc_cidr, 4, i)]
  public_subnets  = [for i, _ in var.availability_zones : cidrsubnet(var.vpc_cidr, 8, 240 + i)]

  enable_nat_gateway   = true
  single_nat_gateway   = true
  enable_dns_hostnames = true
  enable_dns_support   = true

  private_subnet_tags = {
    "kubernetes.io/role/internal-elb" = "1"
    "karpenter.sh/discovery"          = var.name
  }
  public_subnet_tags = {
    "kubernetes.io/role/elb" = "1"
  }
}

resource "aws_vpc_endpoint" "s3" {
  vpc_id            = module.vpc.vpc_id
  service_name      = "com.amazonaws.${var.region}.s3"
  vpc_endpoint_type = "Gateway"
  # Private route tables only: that is where the nodes are. The default (full) endpoint
  # policy stays: ECR serves image layers from an AWS-owned S3 bucket through it.
  route_table_ids = module.vpc.private_route_table_ids

  tags = {
    Name = "${var.name}-s3"
  }
}
