"""Where GPU steps run on Kubernetes: the ``dagster-k8s/config`` op tag of the GPU-pool assets.

dagster-k8s reads it from the step's op tags when ``k8s_job_executor`` launches the step's pod (and from the
run's tags for the run pod). Everywhere else the tag is inert. The node pool label is GKE's; another cluster
labels its GPU nodes differently: change ``GPU_NODE_SELECTOR`` (see deploy/README.md).
"""

K8S_CONFIG_TAG = "dagster-k8s/config"
GPU_NODE_POOL = "gpu"
GPU_NODE_SELECTOR = {"cloud.google.com/gke-nodepool": GPU_NODE_POOL}
GPU_STEP_RESOURCES = {
    "requests": {"cpu": "4", "memory": "24Gi"},
    "limits": {"nvidia.com/gpu": "1", "memory": "48Gi"},
}
GPU_STEP_K8S_CONFIG = {
    "container_config": {"resources": GPU_STEP_RESOURCES},
    "pod_spec_config": {
        "node_selector": GPU_NODE_SELECTOR,
        # GPU node pools are usually tainted so that only pods asking for a GPU land there.
        "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
    },
}
GPU_OP_TAGS = {K8S_CONFIG_TAG: GPU_STEP_K8S_CONFIG}
