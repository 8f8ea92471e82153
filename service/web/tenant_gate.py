"""What every authenticated request passes once its key is known: its tenant's rate limit, then a
slot among the tenant's requests in flight in this process.

Past the rate limit (`catalog-enricher tenants limit T --rps N [--burst M]`) the answer is 429
`application/problem+json` with `Retry-After` and the IETF draft's fields (draft-ietf-httpapi-
ratelimit-headers): `RateLimit-Policy: "tenant";q=20;w=1` (with `;ce-burst=M` when there is a
burst) and `RateLimit: "tenant";r=<requests that could be sent at once now>;t=<seconds until the
allowance is whole again>`. Admitted requests of a limited tenant carry the same two fields, so a
client can pace itself before it is refused. A tenant without a limit pays nothing here but the
slot. A full queue of requests in flight is a 429 too, under the `"in-flight"` policy.
"""

from __future__ import annotations

import math

from service.errors import TooManyRequests
from service.runtime.metrics import Metrics
from service.storage.rate_counter import RateCounter, RateDecision
from service.web.auth import Principal
from service.web.tenant_slots import NoSlot, TenantSlots

RATE_POLICY = "tenant"
IN_FLIGHT_POLICY = "in-flight"


def rate_headers(rps: int, burst: int, decision: RateDecision) -> dict[str, str]:
    policy = f'"{RATE_POLICY}";q={rps};w=1' + (f";ce-burst={burst}" if burst else "")
    return {
        "RateLimit-Policy": policy,
        "RateLimit": f'"{RATE_POLICY}";r={decision.remaining};t={math.ceil(decision.reset_after)}',
    }


class TenantGate:
    def __init__(self, counter: RateCounter, slots: TenantSlots, metrics: Metrics) -> None:
        self.counter = counter
        self.slots = slots
        self.metrics = metrics

    async def check_rate(self, principal: Principal) -> dict[str, str] | None:
        """The RateLimit fields for the answer, or None for a tenant without a limit; raises
        TooManyRequests past the limit."""
        rps = principal.rate_limit_rps
        if rps is None:
            return None
        burst = principal.rate_limit_burst
        decision = await self.counter.hit(principal.tenant_id, rps, burst)
        headers = rate_headers(rps, burst, decision)
        if decision.admitted:
            return headers
        self.metrics.throttled.labels("rate").inc()
        retry = max(1, math.ceil(decision.retry_after))
        raise TooManyRequests(
            f"tenant {principal.tenant_name!r} is limited to {rps} requests a second"
            + (f" (and {burst} more at once)" if burst else "") + f"; retry in {retry} s",
            headers={**headers, "Retry-After": str(retry)},
            violated_policies=[RATE_POLICY],
        )

    async def take_slot(self, principal: Principal, within: float | None) -> None:
        """A slot among the tenant's requests in flight; TooManyRequests when none comes."""
        try:
            await self.slots.take(principal.tenant_id, within)
        except NoSlot as exc:
            self.metrics.throttled.labels("in_flight").inc()
            cap = self.slots.cap
            raise TooManyRequests(
                f"tenant {principal.tenant_name!r} already has {cap} requests in flight in this "
                f"process and more waiting ({exc}); retry shortly",
                headers={"Retry-After": "1",
                         "RateLimit-Policy": f'"{IN_FLIGHT_POLICY}";q={cap};qu="concurrent-requests"',
                         "RateLimit": f'"{IN_FLIGHT_POLICY}";r=0'},
                violated_policies=[IN_FLIGHT_POLICY],
            ) from None

    def contended(self, principal: Principal) -> bool:
        """Has another tenant sent a request to this process within the last second?"""
        return self.slots.contended(principal.tenant_id)

    def give_back_slot(self, principal: Principal) -> None:
        self.slots.give_back(principal.tenant_id)
