"""The code location on a Kubernetes cluster: the same definitions, every step in its own pod.

The Helm user deployment serves this module (``dagster api grpc -m darts_assets.cluster``); locally,
``darts_assets.definitions`` keeps Dagster's default executor (multiprocess, or in-process by run config).
Step pods inherit the run launcher's image, secrets and environment; GPU steps add their node selector and
``nvidia.com/gpu`` limit from their op tags (``darts_assets.placement``). See deploy/README.md.
"""

from dagster import Definitions
from dagster_k8s import k8s_job_executor

from darts_assets.definitions import defs as local_defs

# Every step pod's size (GPU steps raise theirs in their op tags): a scene's input stack is ~1.3 GB of float32.
STEP_K8S_CONFIG = {
    "container_config": {"resources": {"requests": {"cpu": "1", "memory": "6Gi"}, "limits": {"memory": "16Gi"}}}
}
cluster_executor = k8s_job_executor.configured({"step_k8s_config": STEP_K8S_CONFIG}, name="darts_k8s")
defs = Definitions.merge(local_defs, Definitions(executor=cluster_executor))
