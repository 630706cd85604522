from __future__ import annotations

import django_filters
from django.db.models import QuerySet

from finops.models import Environment, UsageRecord
from tenants.scope import TenantScope


def usage_list(*, scope: TenantScope) -> QuerySet[UsageRecord]:
    """The scope's usage records, newest first, with what serializers need joined in."""
    return (
        scope.filter(UsageRecord.objects.all())
        .select_related("tenant", "workflow", "model", "model__tier")
        .order_by("-occurred_at", "-id")
    )


class UsageFilter(django_filters.FilterSet):
    """Query-string filters of the usage list; each maps to an indexed or cheap predicate."""

    workflow = django_filters.CharFilter(field_name="workflow__slug", help_text="Workflow slug.")
    model = django_filters.CharFilter(method="filter_model", help_text="Model name as sent, or the catalog name.")
    environment = django_filters.ChoiceFilter(choices=Environment.choices)
    occurred_after = django_filters.IsoDateTimeFilter(field_name="occurred_at", lookup_expr="gte")
    occurred_before = django_filters.IsoDateTimeFilter(field_name="occurred_at", lookup_expr="lt")
    priced = django_filters.BooleanFilter()
    request_id = django_filters.CharFilter()
    tag = django_filters.CharFilter(method="filter_tag", help_text="key:value, e.g. region:eu.")

    class Meta:
        model = UsageRecord
        fields: list[str] = []

    def filter_model(self, queryset, name, value):
        from django.db.models import Q

        return queryset.filter(Q(model_name=value) | Q(model__name=value))

    def filter_tag(self, queryset, name, value):
        key, sep, tag_value = value.partition(":")
        if not sep:
            return queryset.filter(tags__has_key=key)
        return queryset.filter(**{f"tags__{key}": tag_value})
