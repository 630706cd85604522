"""Pages for people. Views resolve which tenants the signed-in person may see (`scope`), parse the
query string, call selectors and render; a tenant the person may not see answers 404, exactly like
an unknown slug. Every spend figure comes from rollups; days are UTC calendar days."""

from .catalog import focus_export, model_detail, model_price_add, model_price_edit, models_list
from .details import tenant_detail, workflow_detail
from .envelopes import workflow_envelope
from .explore import explorer, explorer_export
from .overview import home
from .prompts import prompt_version_add, prompt_version_detail
from .usage import usage_detail, usage_list
from .workflow_policies import workflow_threshold
from .workflows import workflow_add, workflow_edit, workflows_list

__all__ = [
    "explorer",
    "explorer_export",
    "focus_export",
    "home",
    "model_detail",
    "model_price_add",
    "model_price_edit",
    "models_list",
    "prompt_version_add",
    "prompt_version_detail",
    "tenant_detail",
    "usage_detail",
    "usage_list",
    "workflow_detail",
    "workflow_envelope",
    "workflow_threshold",
    "workflow_add",
    "workflow_edit",
    "workflows_list",
]
