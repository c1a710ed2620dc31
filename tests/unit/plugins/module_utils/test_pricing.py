# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""module_utils/pricing.py: on-demand prices from the Price List API, Spot prices, the cache and
the override.

moto has no Price List API (pricing:GetProducts): those calls are stubbed with botocore's Stubber,
which checks the request against botocore's pricing model, and answered in AWS's real format (the
PriceList entries are JSON strings, as in botocore's own GetProducts example). Spot prices come from
moto's DescribeSpotPriceHistory."""

import datetime
import json

import boto3
import pytest
from botocore.stub import Stubber

from ansible_collections.htcondor.annex.plugins.module_utils import pricing

NOW = 1800000000.0


def product(instance_type, usd, sku="8KTQAHWA58GUHDGC", unit="Hrs"):
    """One PriceList entry as GetProducts returns it (FormatVersion aws_v1), trimmed of attributes
    the parser does not read."""
    term = sku + ".JRTCKXETXF"
    return json.dumps({
        "product": {"productFamily": "Compute Instance", "sku": sku, "attributes": {
            "instanceType": instance_type, "regionCode": "us-east-1", "location": "US East (N. Virginia)",
            "operatingSystem": "Linux", "tenancy": "Shared", "preInstalledSw": "NA", "capacitystatus": "Used",
            "servicecode": "AmazonEC2", "usagetype": "BoxUsage:" + instance_type, "operation": "RunInstances"}},
        "serviceCode": "AmazonEC2",
        "terms": {"OnDemand": {term: {
            "priceDimensions": {term + ".6YS6EN2CT7": {
                "unit": unit, "endRange": "Inf", "beginRange": "0", "appliesTo": [],
                "description": "$%s per On Demand Linux %s Instance Hour" % (usd, instance_type),
                "rateCode": term + ".6YS6EN2CT7", "pricePerUnit": {"USD": "%.10f" % usd}}},
            "sku": sku, "effectiveDate": "2026-11-01T00:00:00Z", "offerTermCode": "JRTCKXETXF",
            "termAttributes": {}}}},
        "version": "20261101000000", "publicationDate": "2026-11-01T00:00:00Z"})


def stubbed_pricing():
    client = boto3.client("pricing", region_name=pricing.PRICE_LIST_REGION, aws_access_key_id="testing",
                          aws_secret_access_key="testing")
    return client, Stubber(client)


def expected_request(instance_type, **extra):
    request = {"ServiceCode": "AmazonEC2", "FormatVersion": "aws_v1",
               "Filters": pricing.on_demand_filters(instance_type, "eu-west-1")}
    request.update(extra)
    return request


def test_price_list_entries_are_parsed():
    assert pricing.parse_on_demand_price([product("m5.large", 0.107)]) == pytest.approx(0.107)
    # several products: the highest (a budget never underestimates); zero and non-hourly ignored
    assert pricing.parse_on_demand_price([product("m5.large", 0.107), product("m5.large", 0.12, sku="X")]) == 0.12
    assert pricing.parse_on_demand_price([product("m5.large", 0.0), product("m5.large", 9, unit="Quantity")]) is None
    assert pricing.parse_on_demand_price([]) is None


def test_filters_name_the_linux_shared_on_demand_product():
    filters = dict((f["Field"], f["Value"]) for f in pricing.on_demand_filters("c5.xlarge", "eu-west-1"))
    assert filters == {"instanceType": "c5.xlarge", "regionCode": "eu-west-1", "operatingSystem": "Linux",
                       "tenancy": "Shared", "preInstalledSw": "NA", "capacitystatus": "Used"}
    assert {f["Type"] for f in pricing.on_demand_filters("c5.xlarge", "eu-west-1")} == {"TERM_MATCH"}


def test_get_products_is_paginated_and_checked_against_the_model():
    client, stub = stubbed_pricing()
    stub.add_response("get_products", {"FormatVersion": "aws_v1", "PriceList": [], "NextToken": "page2"},
                      expected_request("m5.large"))
    stub.add_response("get_products", {"FormatVersion": "aws_v1", "PriceList": [product("m5.large", 0.107)]},
                      expected_request("m5.large", NextToken="page2"))
    with stub:
        assert pricing.on_demand_price(client, "m5.large", "eu-west-1") == pytest.approx(0.107)
    stub.assert_no_pending_responses()


def test_override_then_cache_then_api(tmp_path):
    cache = pricing.PriceCache(str(tmp_path / "prices.json"))
    client, stub = stubbed_pricing()
    stub.add_response("get_products", {"FormatVersion": "aws_v1", "PriceList": [product("c5.xlarge", 0.192)]},
                      expected_request("c5.xlarge"))
    with stub:  # one API call: m5.large is overridden
        prices = pricing.resolve_prices(["m5.large", "c5.xlarge"], "eu-west-1", overrides={"m5.large": 0.05},
                                        cache=cache, pricing_client=client, now=NOW)
    assert prices == {"m5.large": 0.05, "c5.xlarge": pytest.approx(0.192)}
    stub.assert_no_pending_responses()
    cache.save()
    again = pricing.PriceCache(str(tmp_path / "prices.json"))
    with stub:  # no response queued: a call would fail
        assert pricing.resolve_prices(["c5.xlarge"], "eu-west-1", cache=again, pricing_client=client,
                                      now=NOW + 3600) == {"c5.xlarge": pytest.approx(0.192)}
    # past the TTL the cache is not used
    assert again.get("on-demand/eu-west-1/c5.xlarge", NOW + pricing.DEFAULT_TTL_SECONDS + 1,
                     pricing.DEFAULT_TTL_SECONDS) is None
    # no price anywhere: the type is left out (the autoscaler does not launch it)
    stub.add_response("get_products", {"FormatVersion": "aws_v1", "PriceList": []}, expected_request("x9.huge"))
    with stub:
        assert pricing.resolve_prices(["x9.huge"], "eu-west-1", pricing_client=client, now=NOW) == {}


def test_spot_prices_latest_per_type_and_zone():
    t0 = datetime.datetime(2026, 11, 30, 20, 0, tzinfo=datetime.timezone.utc)
    history = [
        {"InstanceType": "m5.large", "AvailabilityZone": "us-east-1a", "SpotPrice": "0.0400",
         "ProductDescription": "Linux/UNIX", "Timestamp": t0},
        {"InstanceType": "m5.large", "AvailabilityZone": "us-east-1a", "SpotPrice": "0.0450",
         "ProductDescription": "Linux/UNIX", "Timestamp": t0 + datetime.timedelta(minutes=5)},
        {"InstanceType": "m5.large", "AvailabilityZone": "us-east-1b", "SpotPrice": "0.0380",
         "ProductDescription": "Linux/UNIX", "Timestamp": t0}]
    assert pricing.latest_spot_prices(history) == {"m5.large": {"us-east-1a": 0.045, "us-east-1b": 0.038}}


def test_spot_prices_from_describe_spot_price_history():
    from moto import mock_aws
    with mock_aws():
        ec2 = boto3.client("ec2", region_name="us-east-1", aws_access_key_id="testing",
                           aws_secret_access_key="testing")
        now = datetime.datetime.now(datetime.timezone.utc)
        by_zone = pricing.spot_prices(ec2, ["m5.large"], now)
        assert by_zone and set(by_zone) == {"m5.large"} and all(z.startswith("us-east-1") for z in by_zone["m5.large"])
        prices = pricing.resolve_prices(["m5.large"], "us-east-1", spot=True, zones=["us-east-1a", "us-east-1b"],
                                        ec2=ec2, now=NOW, now_datetime=now)
        assert prices == {"m5.large": max(by_zone["m5.large"][z] for z in ("us-east-1a", "us-east-1b"))}
