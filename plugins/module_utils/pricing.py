# -*- coding: utf-8 -*-
# Copyright: htcondor.annex contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Prices of EC2 instance types for the autoscaler's budget: on-demand from the AWS Price List
API (pricing:GetProducts), Spot from DescribeSpotPriceHistory, a small file cache with a TTL, and
the user's override (price_per_hour) that wins over both.

Read-only calls: the annex user's policy gains exactly pricing:GetProducts and
ec2:DescribeSpotPriceHistory (both take only resource "*").
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import os
import tempfile
import time
from datetime import datetime, timezone

from ansible_collections.htcondor.annex.plugins.module_utils.aws import paginate

# The Price List query API answers in us-east-1 (and a few other regions) for every region's prices.
PRICE_LIST_REGION = "us-east-1"
SPOT_PRODUCT = "Linux/UNIX"
DEFAULT_TTL_SECONDS = 24 * 3600  # on-demand prices change rarely; Spot entries use SPOT_TTL_SECONDS
SPOT_TTL_SECONDS = 15 * 60


def on_demand_filters(instance_type, region):
    """GetProducts filters for the Linux, shared-tenancy, no-preinstalled-software, used-capacity
    (not reservation) on-demand price of one type in one region."""
    wanted = [("instanceType", instance_type), ("regionCode", region), ("operatingSystem", "Linux"),
              ("tenancy", "Shared"), ("preInstalledSw", "NA"), ("capacitystatus", "Used")]
    return [{"Type": "TERM_MATCH", "Field": field, "Value": value} for field, value in wanted]


def parse_on_demand_price(price_list):
    """USD per hour from GetProducts' PriceList: JSON strings, each a product with
    terms.OnDemand.<term>.priceDimensions.<dim>.pricePerUnit.USD (unit "Hrs"). Several products
    (should not happen with the filters above): the highest, so a budget is never underestimated.
    None when no hourly price is found."""
    best = None
    for entry in price_list or []:
        product = json.loads(entry) if isinstance(entry, str) else entry
        for term in ((product.get("terms") or {}).get("OnDemand") or {}).values():
            for dim in (term.get("priceDimensions") or {}).values():
                if dim.get("unit") not in ("Hrs", "Hours", "hours"):
                    continue
                try:
                    usd = float((dim.get("pricePerUnit") or {})["USD"])
                except (KeyError, TypeError, ValueError):
                    continue
                if usd > 0 and (best is None or usd > best):
                    best = usd
    return best


def on_demand_price(pricing_client, instance_type, region):
    """One GetProducts query (paginated) -> USD per hour or None. pricing_client: a boto3 'pricing'
    client in PRICE_LIST_REGION."""
    price_list = paginate(pricing_client, "GetProducts", "PriceList", ServiceCode="AmazonEC2",
                          Filters=on_demand_filters(instance_type, region), FormatVersion="aws_v1")
    return parse_on_demand_price(price_list)


def latest_spot_prices(history):
    """DescribeSpotPriceHistory's SpotPriceHistory -> {type: {zone: USD per hour}}, the latest
    entry per type x zone."""
    latest = {}
    for item in history or []:
        key = (item["InstanceType"], item["AvailabilityZone"])
        if key not in latest or item["Timestamp"] > latest[key]["Timestamp"]:
            latest[key] = item
    prices = {}
    for (itype, zone), item in latest.items():
        prices.setdefault(itype, {})[zone] = float(item["SpotPrice"])
    return prices


def spot_prices(ec2, instance_types, now_datetime):
    """{type: {zone: USD per hour}} now: with StartTime = now, AWS answers the price in force
    for each type x zone (one entry each), paginated."""
    history = paginate(ec2, "DescribeSpotPriceHistory", "SpotPriceHistory", InstanceTypes=list(instance_types),
                       ProductDescriptions=[SPOT_PRODUCT], StartTime=now_datetime)
    return latest_spot_prices(history)


class PriceCache:
    """{key: {"usd": price, "at": epoch}} in a JSON file (the annex user's state directory on the
    master); entries older than their TTL are not used. Written atomically."""

    def __init__(self, path):
        self.path = path
        try:
            with open(path) as handle:
                self.entries = json.load(handle)
        except (IOError, OSError, ValueError):
            self.entries = {}

    def get(self, key, now, ttl):
        entry = self.entries.get(key)
        if entry and now - float(entry.get("at", 0)) <= ttl:
            return entry.get("usd")
        return None

    def put(self, key, usd, now):
        self.entries[key] = {"usd": usd, "at": now}

    def save(self):
        directory = os.path.dirname(os.path.abspath(self.path))
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=".prices-")
        with os.fdopen(fd, "w") as handle:
            json.dump(self.entries, handle, sort_keys=True)
        os.rename(tmp, self.path)


def resolve_prices(instance_types, region, spot=False, zones=None, overrides=None, cache=None,
                   pricing_client=None, ec2=None, now=None, now_datetime=None):
    """{type: USD per hour} for the budget: the user's price_per_hour override, else a fresh cache
    entry, else the API. Spot: the highest latest price over the allowed zones (a budget must
    not assume the cheapest zone). Types without a price are left out (the autoscaler then does not
    launch them)."""
    now = time.time() if now is None else now
    if now_datetime is None:
        now_datetime = datetime.fromtimestamp(now, timezone.utc)
    overrides = overrides or {}
    prices = {}
    missing = []
    market = "spot" if spot else "on-demand"
    for itype in instance_types:
        if itype in overrides:
            prices[itype] = float(overrides[itype])
            continue
        cached = cache.get("%s/%s/%s" % (market, region, itype), now,
                           SPOT_TTL_SECONDS if spot else DEFAULT_TTL_SECONDS) if cache else None
        if cached is not None:
            prices[itype] = float(cached)
        else:
            missing.append(itype)
    if missing and spot and ec2 is not None:
        by_zone = spot_prices(ec2, missing, now_datetime)
        for itype in missing:
            zone_prices = [p for z, p in by_zone.get(itype, {}).items() if not zones or z in zones]
            if zone_prices:
                prices[itype] = max(zone_prices)
    elif missing and not spot and pricing_client is not None:
        for itype in missing:
            usd = on_demand_price(pricing_client, itype, region)
            if usd is not None:
                prices[itype] = usd
    if cache is not None:
        for itype in missing:
            if itype in prices:
                cache.put("%s/%s/%s" % (market, region, itype), prices[itype], now)
    return prices
