"""Static checks of a plan against a catalog and a policy, before anything runs.

`parse_steps` builds steps from JSON; `validate_plan` reports every problem at
once; `check_arguments` is the argument check again at run time, on resolved
arguments; `checked_graph` is the plan's DAG, refused with the graph's problems
when the plan could never finish.
"""

from __future__ import annotations

import typing

from executor._utils import export_lazily as _export_lazily

if typing.TYPE_CHECKING or not _export_lazily(globals()):
    from executor.validate.arguments import check_arguments as check_arguments
    from executor.validate.checks import validate_plan as validate_plan
    from executor.validate.graph import checked_graph as checked_graph
    from executor.validate.parse import parse_steps as parse_steps
    from executor.validate.problem import Problem as Problem
