terraform {
  # terraform-aws-modules/eks 21.x needs Terraform >= 1.5.7 and the AWS provider >= 6.28.
  required_version = ">= 1.5.7"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = "~> 6.28"
    }
    helm = {
      source  = "hashicorp/helm"
      version = "~> 3.0"
    }
  }
}
