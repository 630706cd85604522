from datetime import UTC, datetime
from decimal import Decimal

import factory
from django.contrib.auth import get_user_model

from finops.models import LlmModel, ModelPrice, ModelTier, Workflow
from tenants.models import Membership, Tenant


class TenantFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Tenant
        django_get_or_create = ("slug",)

    slug = factory.Sequence(lambda n: f"tenant-{n}")
    name = factory.LazyAttribute(lambda o: o.slug.replace("-", " ").title())


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        django_get_or_create = ("username",)

    username = factory.Sequence(lambda n: f"user{n}")
    email = factory.LazyAttribute(lambda o: f"{o.username}@example.com")
    password = factory.django.Password("pw-for-tests-1")


class MembershipFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Membership

    user = factory.SubFactory(UserFactory)
    tenant = factory.SubFactory(TenantFactory)
    role = Membership.Role.VIEWER


class ModelTierFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = ModelTier
        django_get_or_create = ("slug",)

    slug = "standard"
    name = factory.LazyAttribute(lambda o: o.slug.title())
    rank = 2


class LlmModelFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = LlmModel
        django_get_or_create = ("name",)

    name = factory.Sequence(lambda n: f"model-{n}")
    provider = "openai"
    tier = factory.SubFactory(ModelTierFactory)
    encoding = LlmModel.Encoding.O200K


class ModelPriceFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = ModelPrice

    model = factory.SubFactory(LlmModelFactory)
    effective_from = datetime(2024, 1, 1, tzinfo=UTC)
    input = Decimal("2.50")
    cached_input = Decimal("1.25")
    cache_write = Decimal("0")
    output = Decimal("10.00")
    reasoning = None


class WorkflowFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Workflow
        django_get_or_create = ("slug",)

    slug = factory.Sequence(lambda n: f"workflow-{n}")
    name = factory.LazyAttribute(lambda o: o.slug.replace("-", " ").title())
