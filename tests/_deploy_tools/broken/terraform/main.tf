# A bucket with nothing set, an unpinned module, SSH from anywhere, a wildcard policy
# and a variable without type, description or validation.
variable "bucket" {}

module "eks" {
  source  = "terraform-aws-modules/eks/aws"
  version = "~> 21.0"
}

resource "aws_s3_bucket" "slides" {
  bucket = var.bucket
}

resource "aws_security_group" "ssh" {
  name = "ssh"
  ingress {
    from_port   = 22
    to_port     = 22
    protocol    = "tcp"
    cidr_blocks = ["0.0.0.0/0"]
  }
}

data "aws_iam_policy_document" "all" {
  statement {
    actions   = ["s3:*"]
    resources = ["*"]
  }
}

terraform {
  backend "s3" {
    bucket = "state"
  }
}
