"""A Kubernetes ConfigMap through an explicit provider, to make the engine load the plugin.

The kubeconfig comes from config (a secret: it is a credential file) and points at
whatever server the test chose; the program itself never decides where it deploys.
"""

from __future__ import annotations

import pulumi
import pulumi_kubernetes as k8s

config = pulumi.Config()
provider = k8s.Provider("target", kubeconfig=config.require_secret("kubeconfig"))
config_map = k8s.core.v1.ConfigMap(
    "smoke",
    metadata=k8s.meta.v1.ObjectMetaArgs(name="smoke", namespace="default"),
    data={"greeting": "hello"},
    opts=pulumi.ResourceOptions(provider=provider),
)
pulumi.export("name", config_map.metadata.name)
