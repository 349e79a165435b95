# One role for the slidebank service account (Ray head, workers, job submitter) through
# EKS Pod Identity: no keys, no OIDC annotations. Least privilege: list and read the
# slides prefix, read and write the store prefix, use the data key only through S3, and
# add (never read, overwrite-check or delete) Ray logs under the logs bucket's prefix.

data "aws_iam_policy_document" "pods_trust" {
  statement {
    actions = ["sts:AssumeRole", "sts:TagSession"]
    principals {
      type        = "Service"
      identifiers = ["pods.eks.amazonaws.com"]
    }
    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [data.aws_caller_identity.current.account_id]
    }
  }
}

resource "aws_iam_role" "pods" {
  name               = "${var.name}-ray-pods"
  description        = "slidebank Ray pods (${var.namespace}/${var.service_account})"
  assume_role_policy = data.aws_iam_policy_document.pods_trust.json
}

data "aws_iam_policy_document" "pods" {
  statement {
    sid       = "ListSlidesPrefix"
    actions   = ["s3:ListBucket"]
    resources = [local.slides_bucket_arn]
    condition {
      test     = "StringLike"
      variable = "s3:prefix"
      values   = [var.slides_prefix, "${var.slides_prefix}*"]
    }
  }

  statement {
    sid       = "ReadSlides"
    actions   = ["s3:GetObject", "s3:GetObjectVersion"]
    resources = ["${local.slides_bucket_arn}/${var.slides_prefix}*"]
  }

  statement {
    sid       = "ListWeightsPrefix"
    actions   = ["s3:ListBucket"]
    resources = [aws_s3_bucket.data["store"].arn]
    condition {
      test     = "StringLike"
      variable = "s3:prefix"
      values   = [var.weights_prefix, "${var.weights_prefix}*"]
    }
  }

  statement {
    sid       = "ReadWeights"
    actions   = ["s3:GetObject"]
    resources = ["${aws_s3_bucket.data["store"].arn}/${var.weights_prefix}*"]
  }

  statement {
    sid       = "ListStorePrefix"
    actions   = ["s3:ListBucket", "s3:ListBucketMultipartUploads"]
    resources = [aws_s3_bucket.data["store"].arn]
    condition {
      test     = "StringLike"
      variable = "s3:prefix"
      values   = [var.store_prefix, "${var.store_prefix}*"]
    }
  }

  statement {
    sid = "ReadWriteStore"
    actions = [
      "s3:GetObject",
      "s3:PutObject",
      "s3:DeleteObject",
      "s3:AbortMultipartUpload",
      "s3:ListMultipartUploadParts",
    ]
    resources = ["${aws_s3_bucket.data["store"].arn}/${var.store_prefix}*"]
  }

  # The Fluent Bit sidecar of every Ray pod (infra/deploy/logging) uploads with single
  # PUTs (use_put_object); the logs bucket is SSE-S3, so no key grant is needed.
  statement {
    sid       = "ShipRayLogs"
    actions   = ["s3:PutObject"]
    resources = ["${aws_s3_bucket.logs.arn}/${var.ray_logs_prefix}*"]
  }

  statement {
    sid       = "DataKeyThroughS3Only"
    actions   = ["kms:Decrypt", "kms:GenerateDataKey"]
    resources = compact([aws_kms_key.data.arn, var.slides_kms_key_arn])
    condition {
      test     = "StringEquals"
      variable = "kms:ViaService"
      values   = ["s3.${var.region}.amazonaws.com"]
    }
  }
}

resource "aws_iam_role_policy" "pods" {
  name   = "slidebank-data"
  role   = aws_iam_role.pods.id
  policy = data.aws_iam_policy_document.pods.json
}

resource "aws_eks_pod_identity_association" "pods" {
  cluster_name    = module.eks.cluster_name
  namespace       = var.namespace
  service_account = var.service_account
  role_arn        = aws_iam_role.pods.arn
}
