output "cluster_name" {
  description = "EKS cluster name (aws eks update-kubeconfig --name ...)."
  value       = module.eks.cluster_name
}

output "slides_bucket" {
  description = "Bucket of the source slides."
  value       = var.slides_bucket_name
}

output "store_bucket" {
  description = "Bucket of the feature store and checkpoints."
  value       = aws_s3_bucket.data["store"].id
}

output "pod_role_arn" {
  description = "IAM role the slidebank service account assumes through Pod Identity."
  value       = aws_iam_role.pods.arn
}

output "image_repository" {
  description = "ECR repository for the slidebank image."
  value       = aws_ecr_repository.slidebank.repository_url
}

output "karpenter_node_role" {
  description = "IAM role name of Karpenter-launched nodes (EC2NodeClass spec.role)."
  value       = module.karpenter.node_iam_role_name
}

# What infra/deploy reads (values/cluster.env): write it with
#   terraform output -raw kustomize_env > ../infra/deploy/values/cluster.env
output "kustomize_env" {
  description = "KEY=VALUE lines for infra/deploy/values/cluster.env, consumed by the manifests."
  value       = <<-EOT
    CLUSTER_NAME=${module.eks.cluster_name}
    AWS_REGION=${var.region}
    KARPENTER_NODE_ROLE=${module.karpenter.node_iam_role_name}
    IMAGE=${aws_ecr_repository.slidebank.repository_url}:0.1.0
    SLIDEBANK_SLIDES_URI=s3://${var.slides_bucket_name}/${var.slides_prefix}
    SLIDEBANK_STORE_URI=s3://${aws_s3_bucket.data["store"].id}/${var.store_prefix}
    SLIDEBANK_WEIGHTS_URI=s3://${aws_s3_bucket.data["store"].id}/${var.weights_prefix}
    SLIDEBANK_LOGS_BUCKET=${aws_s3_bucket.logs.id}
    SLIDEBANK_LOGS_PREFIX=${var.ray_logs_prefix}
    RAY_GRAFANA_HOST=http://kube-prometheus-stack-grafana.monitoring.svc
    RAY_PROMETHEUS_HOST=http://kube-prometheus-stack-prometheus.monitoring.svc:9090
    RAY_PROMETHEUS_NAME=Prometheus
    RAY_GRAFANA_IFRAME_HOST=http://127.0.0.1:3000
  EOT
}

output "ray_launcher" {
  description = "Values for infra/deploy/ray-launcher/aws-gpu.yaml (null unless enable_ray_launcher)."
  value = var.enable_ray_launcher ? {
    security_group  = aws_security_group.ray_nodes[0].name
    head_profile    = aws_iam_instance_profile.ray_head[0].name
    worker_profile  = aws_iam_instance_profile.ray_worker[0].name
    private_subnets = module.vpc.private_subnets
  } : null
}
