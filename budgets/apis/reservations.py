from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response

from budgets.models import Reservation
from budgets.services.reservations import reservation_release
from tenants.models import ApiKey, Membership

from .base import BudgetsScopedApi


class ReservationOutputSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    status = serializers.ChoiceField(choices=Reservation.Status.choices)
    released = serializers.BooleanField(
        help_text="True if this call gave the hold back; false if it had already ended."
    )


class ReservationReleaseApi(BudgetsScopedApi):
    """Give a reservation back when the call it was for will not happen (it failed, or was cancelled).

    Releasing is optional: an unsettled reservation expires by itself after RESERVATION_TTL_SECONDS.
    Releasing a settled, expired or already released reservation changes nothing.
    """

    required_scope = ApiKey.Scope.PREFLIGHT  # the key that preflights may give its holds back
    write_role = Membership.Role.VIEWER

    @extend_schema(operation_id="reservations_release", request=None, responses={200: ReservationOutputSerializer})
    def post(self, request: Request, reservation_id) -> Response:
        reservation = self.visible_or_404(self.scoped(Reservation.objects.all()), reservation_id)
        released = reservation_release(reservation=reservation)
        reservation.refresh_from_db()
        return Response({"id": reservation.pk, "status": reservation.status, "released": released})
