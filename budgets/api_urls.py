from django.urls import path

from .apis import approvals, budgets, controls, preflight, reservations

urlpatterns = [
    path("preflight", preflight.PreflightApi.as_view(), name="api-preflight"),
    path(
        "reservations/<uuid:reservation_id>/release",
        reservations.ReservationReleaseApi.as_view(),
        name="api-reservation-release",
    ),
    path("budgets", budgets.BudgetCollectionApi.as_view(), name="api-budgets"),
    path("budgets/<int:budget_id>", budgets.BudgetDetailApi.as_view(), name="api-budget-detail"),
    path("budgets/<int:budget_id>/increase", budgets.BudgetIncreaseApi.as_view(), name="api-budget-increase"),
    path("controls", controls.ControlCollectionApi.as_view(), name="api-controls"),
    path("controls/<int:control_id>/end", controls.ControlEndApi.as_view(), name="api-control-end"),
    path("approvals", approvals.ApprovalCollectionApi.as_view(), name="api-approvals"),
    path("approvals/<uuid:approval_id>", approvals.ApprovalDetailApi.as_view(), name="api-approval-detail"),
    path(
        "approvals/<uuid:approval_id>/approve",
        approvals.ApprovalDecideApi.as_view(approve=True),
        name="api-approval-approve",
    ),
    path(
        "approvals/<uuid:approval_id>/cancel",
        approvals.ApprovalCancelApi.as_view(),
        name="api-approval-cancel",
    ),
    path(
        "approvals/<uuid:approval_id>/reject",
        approvals.ApprovalDecideApi.as_view(approve=False),
        name="api-approval-reject",
    ),
]
