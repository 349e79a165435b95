variable "name" {
  type        = string
  description = "Deployment name: EKS cluster, IAM roles and the Karpenter discovery tag are named after it."
  default     = "slidebank"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{0,30}[a-z0-9]$", var.name))
    error_message = "name must be 2-32 characters of lower-case letters, digits and '-', starting with a letter."
  }
}

variable "region" {
  type        = string
  description = "AWS region for every resource (prices in docs/cloud.md are us-east-1)."
  default     = "us-east-1"

  validation {
    condition     = can(regex("^[a-z]{2}(-gov)?-[a-z]+-[0-9]$", var.region))
    error_message = "region must look like us-east-1."
  }
}

variable "availability_zones" {
  type        = list(string)
  description = "Availability zones for the VPC's subnets (at least two: EKS requires it)."

  validation {
    condition     = length(var.availability_zones) >= 2 && alltrue([for az in var.availability_zones : can(regex("^[a-z]{2}(-gov)?-[a-z]+-[0-9][a-z]$", az))])
    error_message = "availability_zones needs at least two zone names such as us-east-1a."
  }
}

variable "vpc_cidr" {
  type        = string
  description = "IPv4 range of the VPC (/16 to /20: room for one subnet per zone and pod IPs)."
  default     = "10.40.0.0/16"

  validation {
    condition     = can(cidrhost(var.vpc_cidr, 0)) && tonumber(split("/", var.vpc_cidr)[1]) >= 16 && tonumber(split("/", var.vpc_cidr)[1]) <= 20
    error_message = "vpc_cidr must be a valid IPv4 CIDR with a prefix between /16 and /20."
  }
}

variable "kubernetes_version" {
  type        = string
  description = "EKS Kubernetes version (major.minor). Raise it together with the Karpenter chart (eks.tf) and the Bottlerocket AMI (infra/deploy/karpenter)."
  default     = "1.35"

  validation {
    condition     = can(regex("^1\\.[0-9]{2}$", var.kubernetes_version))
    error_message = "kubernetes_version must look like 1.34."
  }
}

variable "endpoint_public_access_cidrs" {
  type        = list(string)
  description = "Networks allowed to reach the EKS API endpoint from the internet; empty keeps the endpoint private (reach it from inside the VPC)."
  default     = []

  validation {
    condition     = alltrue([for c in var.endpoint_public_access_cidrs : can(cidrhost(c, 0)) && c != "0.0.0.0/0"])
    error_message = "endpoint_public_access_cidrs must be valid CIDRs, and never 0.0.0.0/0."
  }
}

variable "slides_bucket_name" {
  type        = string
  description = "Bucket holding the source whole-slide images (read-only to the cluster); created here unless create_slides_bucket is false."

  validation {
    condition     = can(regex("^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$", var.slides_bucket_name))
    error_message = "slides_bucket_name must be a valid S3 bucket name (3-63 lower-case characters)."
  }
}

variable "store_bucket_name" {
  type        = string
  description = "Bucket holding the feature store, checkpoints and run outputs (read-write to the cluster)."

  validation {
    condition     = can(regex("^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$", var.store_bucket_name))
    error_message = "store_bucket_name must be a valid S3 bucket name (3-63 lower-case characters)."
  }
}

variable "create_slides_bucket" {
  type        = bool
  description = "Create the slides bucket. false: slides_bucket_name is an existing bucket (the scanners' archive); the cluster only gets read access to slides_prefix in it."
  default     = true

  validation {
    condition     = var.create_slides_bucket == true || var.create_slides_bucket == false
    error_message = "create_slides_bucket must be true or false."
  }
}

variable "slides_kms_key_arn" {
  type        = string
  description = "KMS key of an existing slides bucket encrypted with its own key (empty: SSE-S3, or the bucket created here)."
  default     = ""

  validation {
    condition     = var.slides_kms_key_arn == "" || can(regex("^arn:aws[a-z-]*:kms:[a-z0-9-]+:[0-9]{12}:key/[0-9a-f-]+$", var.slides_kms_key_arn))
    error_message = "slides_kms_key_arn must be empty or a KMS key ARN."
  }
}

variable "slides_prefix" {
  type        = string
  description = "Key prefix under which the cluster may read slides (ends with '/')."
  default     = "cohorts/"

  validation {
    condition     = can(regex("^[A-Za-z0-9!_.*'()-]+(/[A-Za-z0-9!_.*'()-]+)*/$", var.slides_prefix))
    error_message = "slides_prefix must be a non-empty key prefix ending with '/'."
  }
}

variable "store_prefix" {
  type        = string
  description = "Key prefix under which the cluster may read and write the store (ends with '/')."
  default     = "store/"

  validation {
    condition     = can(regex("^[A-Za-z0-9!_.*'()-]+(/[A-Za-z0-9!_.*'()-]+)*/$", var.store_prefix))
    error_message = "store_prefix must be a non-empty key prefix ending with '/'."
  }
}

variable "ray_logs_prefix" {
  type        = string
  description = "Key prefix in the logs bucket where each Ray pod's log-shipping sidecar writes its logs (ends with '/'); write-only to the cluster."
  default     = "ray-logs/"

  validation {
    condition     = can(regex("^[A-Za-z0-9!_.*'()-]+(/[A-Za-z0-9!_.*'()-]+)*/$", var.ray_logs_prefix))
    error_message = "ray_logs_prefix must be a non-empty key prefix ending with '/'."
  }
}

variable "weights_prefix" {
  type        = string
  description = "Key prefix in the store bucket holding encoder weights (<encoder>.safetensors), read-only to the cluster and fetched onto each GPU node."
  default     = "weights/"

  validation {
    condition     = can(regex("^[A-Za-z0-9!_.*'()-]+(/[A-Za-z0-9!_.*'()-]+)*/$", var.weights_prefix))
    error_message = "weights_prefix must be a non-empty key prefix ending with '/'."
  }
}

variable "namespace" {
  type        = string
  description = "Kubernetes namespace of the Ray jobs (must match infra/deploy/kuberay)."
  default     = "slidebank"

  validation {
    condition     = can(regex("^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$", var.namespace))
    error_message = "namespace must be a DNS-1123 label."
  }
}

variable "service_account" {
  type        = string
  description = "Service account of the Ray head, workers and submitter (must match infra/deploy/kuberay)."
  default     = "slidebank"

  validation {
    condition     = can(regex("^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$", var.service_account))
    error_message = "service_account must be a DNS-1123 label."
  }
}

variable "noncurrent_version_days" {
  type        = number
  description = "Days a replaced or deleted object version is kept in the store bucket (Lance keeps its own versions, so S3's are only a short undo)."
  default     = 7

  validation {
    condition     = var.noncurrent_version_days >= 1 && var.noncurrent_version_days <= 365
    error_message = "noncurrent_version_days must be between 1 and 365."
  }
}

variable "kms_deletion_window_days" {
  type        = number
  description = "Waiting period before the data key is deleted after `terraform destroy` (7-30 days)."
  default     = 30

  validation {
    condition     = var.kms_deletion_window_days >= 7 && var.kms_deletion_window_days <= 30
    error_message = "kms_deletion_window_days must be between 7 and 30."
  }
}

variable "enable_ray_launcher" {
  type        = bool
  description = "Also create the instance profiles and security group that infra/deploy/ray-launcher/aws-gpu.yaml (`ray up`, no Kubernetes) names."
  default     = false

  validation {
    condition     = var.enable_ray_launcher == true || var.enable_ray_launcher == false
    error_message = "enable_ray_launcher must be true or false."
  }
}
