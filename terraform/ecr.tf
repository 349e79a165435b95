# The slidebank image (infra/deploy/docker): immutable tags, scanned on push, encrypted
# with the data key. Nodes pull it through the NAT (or add ECR interface endpoints).
resource "aws_ecr_repository" "slidebank" {
  name                 = var.name
  image_tag_mutability = "IMMUTABLE"

  image_scanning_configuration {
    scan_on_push = true
  }

  encryption_configuration {
    encryption_type = "KMS"
    kms_key         = aws_kms_key.data.arn
  }
}

resource "aws_ecr_lifecycle_policy" "slidebank" {
  repository = aws_ecr_repository.slidebank.name
  policy = jsonencode({
    rules = [{
      rulePriority = 1
      description  = "keep the 20 newest images"
      selection = {
        tagStatus   = "any"
        countType   = "imageCountMoreThan"
        countNumber = 20
      }
      action = { type = "expire" }
    }]
  })
}
