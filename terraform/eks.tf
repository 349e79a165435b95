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
    # Network policies (infra/deploy/kuberay/networkpolicy.yaml) are enforced only with
    # the VPC CNI's policy agent, which is off by default.
    vpc-cni = {
      before_compute       = true
      configuration_values = jsonencode({ enableNetworkPolicy = "true" })
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
  # Supported releases move fast (each minor for about a month): raise it with
  # kubernetes_version, following Karpenter's upgrade guide.
  version = "1.15.0"
  wait    = false

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

# The monitoring stack the PodMonitor and the Grafana dashboard ConfigMap
# (infra/deploy) need: Prometheus Operator, Prometheus and Grafana, release name and
# namespace as the manifests and the Ray head's RAY_GRAFANA_HOST / RAY_PROMETHEUS_HOST
# (cluster.env) expect. Grafana's sidecar loads every ConfigMap labelled
# grafana_dashboard=1; Prometheus selects every PodMonitor, not only the chart's own.
resource "helm_release" "kube_prometheus_stack" {
  namespace        = "monitoring"
  create_namespace = true
  name             = "kube-prometheus-stack"
  repository       = "https://prometheus-community.github.io/helm-charts"
  chart            = "kube-prometheus-stack"
  version          = "82.6.0"

  values = [yamlencode({
    prometheus = {
      prometheusSpec = {
        podMonitorSelectorNilUsesHelmValues     = false
        serviceMonitorSelectorNilUsesHelmValues = false
        retention                               = "15d"
        nodeSelector                            = { "karpenter.sh/controller" = "true" }
      }
    }
    grafana = {
      nodeSelector = { "karpenter.sh/controller" = "true" }
      sidecar      = { dashboards = { enabled = true, label = "grafana_dashboard", searchNamespace = "ALL" } }
      # The Ray dashboard embeds Grafana panels (RAY_GRAFANA_IFRAME_HOST).
      "grafana.ini" = { security = { allow_embedding = true } }
    }
  })]
}

# GPU utilisation and memory per GPU (the Grafana board's "GPU use"), scraped through
# the stack's ServiceMonitor; only on GPU nodes.
resource "helm_release" "dcgm_exporter" {
  namespace  = "monitoring"
  name       = "dcgm-exporter"
  repository = "https://nvidia.github.io/dcgm-exporter/helm-charts"
  chart      = "dcgm-exporter"
  version    = "4.8.3"

  values = [yamlencode({
    nodeSelector   = { "slidebank.io/pool" = "gpu" }
    tolerations    = [{ key = "nvidia.com/gpu", operator = "Exists", effect = "NoSchedule" }]
    serviceMonitor = { enabled = true }
  })]

  depends_on = [helm_release.kube_prometheus_stack]
}
