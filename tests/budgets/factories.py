import factory

from budgets.models import Budget, HardAction, Metric, Period


class BudgetFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Budget

    name = factory.Sequence(lambda n: f"Budget {n}")
    metric = Metric.COST
    period = Period.MONTH
    time_zone = "UTC"
    soft_limit = None
    hard_limit = None
    hard_action = HardAction.DENY
