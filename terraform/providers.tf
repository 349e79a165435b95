provider "aws" {
  region = var.region

  default_tags {
    tags = {
      Project    = "slidebank"
      Deployment = var.name
      ManagedBy  = "terraform"
    }
  }
}

# Helm talks to the new cluster with a short-lived token from the AWS CLI, so no
# kubeconfig or long-lived credential is written anywhere.
provider "helm" {
  kubernetes = {
    host                   = module.eks.cluster_endpoint
    cluster_ca_certificate = base64decode(module.eks.cluster_certificate_authority_data)
    exec = {
      api_version = "client.authentication.k8s.io/v1beta1"
      command     = "aws"
      args        = ["eks", "get-token", "--cluster-name", module.eks.cluster_name, "--region", var.region]
    }
  }
}
