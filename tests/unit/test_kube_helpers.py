"""components._kube is the bottom layer (issue 17 item 5): it holds the helpers both
StatefulSets share and imports nothing of the stack config at run time, so the config
module stays importable without pulumi_kubernetes and nothing runs back up the layers."""

from __future__ import annotations

import subprocess
import sys
from typing import get_args

from components import _kube
from components.config import SPREADS
from tests.support import mocks


def test_the_spread_type_and_the_values_config_accepts_agree() -> None:
    assert get_args(_kube.Spread) == SPREADS


def test_kube_helpers_do_not_import_the_config() -> None:
    code = "import sys, components._kube; sys.exit('components.config' in sys.modules)"
    completed = subprocess.run([sys.executable, "-c", code], cwd=mocks.REPO_ROOT, check=False)
    assert completed.returncode == 0
