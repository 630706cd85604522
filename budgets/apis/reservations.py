from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response

from budgets.models import Reservation
from budgets.selectors import reservations_scoped
from budgets.services.reservations import reservation_release
from tenants.scope import Operation
from tenants.scoping import TenantScopedAPIView


class ReservationOutputSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    status = serializers.ChoiceField(choices=Reservation.Status.choices)
    released = serializers.BooleanField(
        help_text="True if this call gave the hold back; false if it had already ended."
    )


class ReservationReleaseApi(TenantScopedAPIView):
    """Give a reservation back when the call it was for will not happen (it failed, or was cancelled).

    Releasing is optional: an unsettled reservation expires by itself after RESERVATION_TTL_SECONDS.
    Releasing a settled, expired or already released reservation changes nothing.
    """

    # The key that preflights may give its holds back; among people, those who may preflight.
    write_operation = Operation.PREFLIGHT
    tenant_required = False
    lookup_kwarg = "reservation_id"

    @extend_schema(operation_id="reservations_release", request=None, responses={200: ReservationOutputSerializer})
    def post(self, request: Request, reservation_id) -> Response:
        reservation = self.object_in_scope(reservations_scoped(scope=self.scope))
        released = reservation_release(reservation=reservation)
        reservation.refresh_from_db()
        return Response({"id": reservation.pk, "status": reservation.status, "released": released})
