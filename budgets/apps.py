from django.apps import AppConfig
from django.db.models.signals import post_delete, post_save


class BudgetsConfig(AppConfig):
    name = "budgets"

    def ready(self) -> None:
        # Preflight caches these in process (budgets.state): a save or delete here makes this
        # process look again at once; other processes notice within PREFLIGHT_STATE_TTL_SECONDS.
        from finops.models import LlmModel, ModelPrice, ModelTier, TenantWorkflowPolicy, Workflow

        from .models import Budget, Control
        from .state import state_changed

        for model in (Budget, Control, Workflow, TenantWorkflowPolicy, LlmModel, ModelPrice, ModelTier):
            post_save.connect(state_changed, sender=model, dispatch_uid=f"preflight-state-{model.__name__}-save")
            post_delete.connect(state_changed, sender=model, dispatch_uid=f"preflight-state-{model.__name__}-delete")

        # finops never imports budgets (DESIGN.md section 3): ingest charges budget windows, the demo
        # data set gets its budgets, and a grown prompt version opens a prompt_change approval request,
        # through the hooks registered here.
        from finops import hooks

        from .estimates import estimates_report
        from .services.demo import budgets_demo_seed
        from .services.prompt_reviews import PROMPT_REVIEWER
        from .services.windows import budgets_charge

        hooks.usage_charger_register(budgets_charge)
        hooks.demo_seeder_register(budgets_demo_seed)
        from .services.demo_anomalies import anomalies_demo_seed

        hooks.demo_seeder_register(anomalies_demo_seed)
        hooks.prompt_reviewer_register(PROMPT_REVIEWER)
        hooks.estimates_report_register(estimates_report)

        # Budget state on /metrics, read at scrape time (finops.metrics).
        from finops.metrics import scrape_reader_register

        from .metrics import budgets_readings

        scrape_reader_register(budgets_readings)
