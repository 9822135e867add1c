"""The smallest program that needs the whole dynamic-provider path of the toolchain.

It is copied into a temporary project directory as ``__main__.py`` and run there, so its
provider class lives in ``__main__`` and dill pickles it by value: the provider process
(``pulumi-resource-pulumi-python``, i.e. ``python -m pulumi.dynamic``) then needs nothing
from this repository. ``create`` reports the provider process's PID, which proves the
resource was made in that process and not in the program's.
"""

from __future__ import annotations

import os
from typing import Any

import pulumi
from pulumi.dynamic import CreateResult, Resource, ResourceProvider


class GreetingProvider(ResourceProvider):
    def create(self, props: dict[str, Any]) -> CreateResult:
        name = props["name"]
        return CreateResult(f"greeting-{name}", {
            **props,
            "greeting": f"hello {name}",
            "provider_pid": os.getpid(),
        })


class Greeting(Resource):
    greeting: pulumi.Output[str]
    provider_pid: pulumi.Output[int]

    def __init__(self, name: str, token: pulumi.Input[str]) -> None:
        super().__init__(GreetingProvider(), name, {
            "name": name,
            "token": token,
            "greeting": None,
            "provider_pid": None,
        })


greeting = Greeting("e2e", pulumi.Config().require_secret("token"))
pulumi.export("greeting", greeting.greeting)
pulumi.export("provider_pid", greeting.provider_pid)
