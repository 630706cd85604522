from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response

from budgets.models import Reservation
from budgets.services.reservations import reservation_release
from finops.errors import ApplicationError
from tenants.models import ApiKey
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

    required_scope = ApiKey.Scope.PREFLIGHT
    tenant_optional = True

    @extend_schema(operation_id="reservations_release", request=None, responses={200: ReservationOutputSerializer})
    def post(self, request: Request, reservation_id) -> Response:
        reservations = Reservation.objects.all()
        if self.tenant is not None:
            reservations = reservations.filter(tenant=self.tenant)
        elif not (self.api_key is not None and self.api_key.tenant_id is None) and not request.user.is_staff:
            raise ApplicationError("tenant_required", "Name the tenant with ?tenant=<slug>.")
        reservation = reservations.filter(pk=reservation_id).first()
        if reservation is None:
            raise ApplicationError("not_found", "Not found.", status_code=404)
        released = reservation_release(reservation=reservation)
        reservation.refresh_from_db()
        return Response({"id": reservation.pk, "status": reservation.status, "released": released})
