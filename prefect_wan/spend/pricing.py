"""Cost estimates from the catalog's list prices: before submitting (predicted) and after (billed)."""

from __future__ import annotations

from typing import Optional

from prefect_wan.archive.record import CostEstimate, RequestRecord
from prefect_wan.client.catalog import lookup_model
from prefect_wan.client.preflight import PreparedRequest
from prefect_wan.client.regions import Region

LIST_PRICE_NOTE = "list price per second of output; discounts and free quota not applied"


def _priced(model: str, region: str, resolution: Optional[str], seconds: Optional[float], note: str) -> CostEstimate:
    spec = lookup_model(model)
    price = spec.price(Region(region), resolution or spec.default_resolution) if spec else None
    if price is None or seconds is None:
        return CostEstimate(billed_seconds=seconds, note="no published price for this model, region and tier")
    return CostEstimate(
        amount=round(price.amount * seconds, 6),
        currency=price.currency,
        unit_price=price.amount,
        billed_seconds=seconds,
        confirmed=price.confirmed,
        note="; ".join(filter(None, [note, price.note])),
    )


def price_currency(model: str, region: str) -> Optional[str]:
    """The currency ``model`` is priced in, in ``region`` (None: no published price there)."""
    spec = lookup_model(model)
    currencies = {price.currency for (where, _), price in (spec.prices.items() if spec else ()) if where.value == region}
    return currencies.pop() if len(currencies) == 1 else None


def priced_regions(model: str) -> list[str]:
    """The regions where ``model`` has a published price."""
    spec = lookup_model(model)
    return sorted({where.value for where, _ in spec.prices} if spec else set())


def unpriced_notice(model: str, region: str) -> str:
    """What a run of ``model`` in ``region``, where it has no published price, says once."""
    priced = priced_regions(model)
    if not priced:
        elsewhere = "no region has one"
    elif len(priced) == 1:
        elsewhere = f"{priced[0]} has one"
    else:
        elsewhere = f"{', '.join(priced[:-1])} and {priced[-1]} have one"
    return f"{model} has no published price in {region} ({elsewhere}): its costs are not estimated"


def estimate_cost(request: RequestRecord, billed_seconds: Optional[float]) -> CostEstimate:
    """What a finished task cost, from the seconds the service billed (``usage``)."""
    return _priced(request.model, request.region, request.resolution, billed_seconds, LIST_PRICE_NOTE)


def estimate_request_cost(prepared: PreparedRequest) -> CostEstimate:
    """What submitting this request will cost, before anything is sent.

    A smart duration (-1, wan3.0) lets the service choose the length: it is priced at the longest
    the model makes, so a budget is never exceeded by the service's choice.
    """
    family = prepared.family
    duration = prepared.parameters.duration
    seconds = family.default_duration if duration is None else duration
    note = LIST_PRICE_NOTE
    if family.smart_duration and seconds == -1:
        seconds = family.max_duration
        note = f"smart duration: priced at the longest, {seconds} s; " + note
    return _priced(prepared.spec.name, prepared.region.value, prepared.parameters.resolution, float(seconds), note)
