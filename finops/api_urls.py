from django.urls import path

from .apis import exports, litellm, otlp, prompts, spend, tokens, usage, workflow_policies

urlpatterns = [
    path("usage", usage.UsageCollectionApi.as_view(), name="api-usage"),
    path("usage/<int:record_id>", usage.UsageDetailApi.as_view(), name="api-usage-detail"),
    path("tokens/count", tokens.TokenCountApi.as_view(), name="api-tokens-count"),
    path("spend", spend.SpendApi.as_view(), name="api-spend"),
    # The same view as CSV: the groups shown plus a totals row.
    path("spend.csv", spend.SpendApi.as_view(), {"as_csv": True}, name="api-spend-csv"),
    path("exports/focus.csv", exports.FocusExportApi.as_view(), name="api-exports-focus"),
    path(
        "workflows/<str:slug>/prompt-versions",
        prompts.PromptVersionCollectionApi.as_view(),
        name="api-prompt-versions",
    ),
    path("workflows/<str:slug>/policy", workflow_policies.WorkflowPolicyApi.as_view(), name="api-workflow-policy"),
    # Usage from where it already flows: OTLP/HTTP trace exports and LiteLLM's generic_api callback.
    path("otlp/v1/traces", otlp.OtlpTracesApi.as_view(), name="api-otlp-traces"),
    path("litellm/logs", litellm.LitellmLogsApi.as_view(), name="api-litellm-logs"),
]
