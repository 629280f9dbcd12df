"""A kubernetes ApiClient for the agent: in-cluster, else a kubeconfig."""

import os

from kubernetes import client as k8s_client
from kubernetes import config as k8s_config


class ClientConfigError(RuntimeError):
    pass


def api_client(kubeconfig: str = None) -> k8s_client.ApiClient:
    """In a pod: the service account's token and CA (KUBERNETES_SERVICE_HOST set).
    Elsewhere: kubeconfig (argument, $KUBECONFIG, ~/.kube/config), for running the
    agent by hand against a cluster."""
    cfg = k8s_client.Configuration()
    try:
        if kubeconfig is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
            k8s_config.load_incluster_config(client_configuration=cfg)
        else:
            k8s_config.load_kube_config(config_file=kubeconfig, client_configuration=cfg)
    except (k8s_config.ConfigException, OSError) as exc:
        raise ClientConfigError(f"no Kubernetes API credentials: {exc} (in a pod, mount the "
                                "service account token; elsewhere pass a kubeconfig)") from None
    return k8s_client.ApiClient(cfg)
