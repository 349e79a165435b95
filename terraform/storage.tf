# Two buckets as plain resources (so every setting is visible to review and to checkov):
# slides (the source archive; read-only to the cluster; or an existing bucket, see
# create_slides_bucket) and store (features, checkpoints, weights; read-write). Both SSE-KMS with an S3 Bucket Key (without it every GET of an encrypted
# tile range is a KMS call: cost and throttling), public access blocked, TLS only,
# versioned, with lifecycle rules. A third bucket receives their access logs.

data "aws_caller_identity" "current" {}

data "aws_iam_policy_document" "data_key" {
  # checkov:skip=CKV_AWS_356: a key policy's Resource "*" means this key only, not every resource
  # checkov:skip=CKV_AWS_111: the account root administers its own key (AWS's default key policy); IAM policies then grant use
  # checkov:skip=CKV_AWS_109: as above: without the account statement the key would become unmanageable
  # The account administers the key (without this statement nobody could).
  statement {
    sid       = "AccountAdministers"
    actions   = ["kms:*"]
    resources = ["*"] # in a key policy "*" means this key
    principals {
      type        = "AWS"
      identifiers = ["arn:aws:iam::${data.aws_caller_identity.current.account_id}:root"]
    }
  }
}

resource "aws_kms_key" "data" {
  description             = "${var.name}: slides and feature store buckets"
  enable_key_rotation     = true
  deletion_window_in_days = var.kms_deletion_window_days
  policy                  = data.aws_iam_policy_document.data_key.json
}

resource "aws_kms_alias" "data" {
  name          = "alias/${var.name}-data"
  target_key_id = aws_kms_key.data.key_id
}

locals {
  data_buckets = merge(var.create_slides_bucket ? { slides = var.slides_bucket_name } : {}, {
    store = var.store_bucket_name
  })
  # The slides bucket by name, whether created here or existing.
  slides_bucket_arn = "arn:aws:s3:::${var.slides_bucket_name}"
  # At most 32 + 6 + 12 = 50 characters whatever the other names are (S3 allows 63).
  logs_bucket_name = "${var.name}-logs-${data.aws_caller_identity.current.account_id}"
  # Slides are the source archive: old versions kept 90 days. The store is derived data
  # that Lance versions itself: S3's versions are only a short undo.
  noncurrent_days = {
    slides = 90
    store  = var.noncurrent_version_days
  }
}

resource "aws_s3_bucket" "data" {
  # checkov:skip=CKV_AWS_144: cross-region replication doubles storage cost; slides come from the scanners' archive and the store is rebuilt by re-ingestion
  # checkov:skip=CKV2_AWS_62: nothing consumes object events; ingestion is started by a RayJob, not by uploads
  for_each = local.data_buckets
  bucket   = each.value
}

resource "aws_s3_bucket_versioning" "data" {
  for_each = aws_s3_bucket.data
  bucket   = each.value.id
  versioning_configuration {
    status = "Enabled"
  }
}

resource "aws_s3_bucket_server_side_encryption_configuration" "data" {
  for_each = aws_s3_bucket.data
  bucket   = each.value.id
  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm     = "aws:kms"
      kms_master_key_id = aws_kms_key.data.arn
    }
    bucket_key_enabled = true
  }
}

resource "aws_s3_bucket_public_access_block" "data" {
  for_each                = aws_s3_bucket.data
  bucket                  = each.value.id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_ownership_controls" "data" {
  for_each = aws_s3_bucket.data
  bucket   = each.value.id
  rule {
    object_ownership = "BucketOwnerEnforced"
  }
}

resource "aws_s3_bucket_lifecycle_configuration" "data" {
  for_each = aws_s3_bucket.data
  bucket   = each.value.id

  rule {
    id     = "abort-incomplete-uploads"
    status = "Enabled"
    filter {}
    abort_incomplete_multipart_upload {
      days_after_initiation = 2
    }
  }

  rule {
    id     = "expire-old-versions"
    status = "Enabled"
    filter {}
    noncurrent_version_expiration {
      noncurrent_days = local.noncurrent_days[each.key]
    }
  }
}

resource "aws_s3_bucket_logging" "data" {
  for_each      = aws_s3_bucket.data
  bucket        = each.value.id
  target_bucket = aws_s3_bucket.logs.id
  target_prefix = "${each.key}/"
}

data "aws_iam_policy_document" "data_bucket" {
  for_each = aws_s3_bucket.data

  statement {
    sid     = "DenyInsecureTransport"
    effect  = "Deny"
    actions = ["s3:*"]
    resources = [
      each.value.arn,
      "${each.value.arn}/*",
    ]
    principals {
      type        = "*"
      identifiers = ["*"]
    }
    condition {
      test     = "Bool"
      variable = "aws:SecureTransport"
      values   = ["false"]
    }
  }

  # Read-only to the cluster even if someone widens the pod role's policy later.
  dynamic "statement" {
    for_each = each.key == "slides" ? [1] : []
    content {
      sid       = "ClusterReadsOnly"
      effect    = "Deny"
      actions   = ["s3:PutObject", "s3:DeleteObject", "s3:DeleteObjectVersion", "s3:PutObjectAcl"]
      resources = ["${each.value.arn}/*"]
      principals {
        type        = "AWS"
        identifiers = [aws_iam_role.pods.arn]
      }
    }
  }
}

resource "aws_s3_bucket_policy" "data" {
  for_each = aws_s3_bucket.data
  bucket   = each.value.id
  policy   = data.aws_iam_policy_document.data_bucket[each.key].json
}

# Server access logs of both data buckets, and the Ray pods' logs under ray_logs_prefix
# (shipped by their Fluent Bit sidecars). Log delivery writes with SSE-S3 only, so this
# bucket cannot use the KMS key.
resource "aws_s3_bucket" "logs" {
  # checkov:skip=CKV_AWS_145: S3 server access log delivery supports only SSE-S3 on the target bucket
  # checkov:skip=CKV_AWS_18: this is the access-log target itself; logging it would log the logs
  # checkov:skip=CKV_AWS_144: access logs are not replicated; they expire after a year
  # checkov:skip=CKV2_AWS_62: nothing consumes object events on the log bucket
  bucket = local.logs_bucket_name
}

resource "aws_s3_bucket_versioning" "logs" {
  bucket = aws_s3_bucket.logs.id
  versioning_configuration {
    status = "Enabled"
  }
}

resource "aws_s3_bucket_server_side_encryption_configuration" "logs" {
  bucket = aws_s3_bucket.logs.id
  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm = "AES256"
    }
  }
}

resource "aws_s3_bucket_public_access_block" "logs" {
  bucket                  = aws_s3_bucket.logs.id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_ownership_controls" "logs" {
  bucket = aws_s3_bucket.logs.id
  rule {
    object_ownership = "BucketOwnerEnforced"
  }
}

resource "aws_s3_bucket_lifecycle_configuration" "logs" {
  bucket = aws_s3_bucket.logs.id
  rule {
    id     = "expire-logs"
    status = "Enabled"
    filter {}
    expiration {
      days = 365
    }
    noncurrent_version_expiration {
      noncurrent_days = 7
    }
    abort_incomplete_multipart_upload {
      days_after_initiation = 2
    }
  }
}

data "aws_iam_policy_document" "logs_bucket" {
  statement {
    sid       = "S3ServerAccessLogs"
    actions   = ["s3:PutObject"]
    resources = ["${aws_s3_bucket.logs.arn}/*"]
    principals {
      type        = "Service"
      identifiers = ["logging.s3.amazonaws.com"]
    }
    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [data.aws_caller_identity.current.account_id]
    }
  }
  statement {
    sid       = "DenyInsecureTransport"
    effect    = "Deny"
    actions   = ["s3:*"]
    resources = [aws_s3_bucket.logs.arn, "${aws_s3_bucket.logs.arn}/*"]
    principals {
      type        = "*"
      identifiers = ["*"]
    }
    condition {
      test     = "Bool"
      variable = "aws:SecureTransport"
      values   = ["false"]
    }
  }
}

resource "aws_s3_bucket_policy" "logs" {
  bucket = aws_s3_bucket.logs.id
  policy = data.aws_iam_policy_document.logs_bucket.json
}
