# -*- coding: utf-8 -*-
# Copyright: htcondor.annex contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The autoscaler's decision engine: how many workers of which instance types one run launches.

Pure: it takes plain data (job and machine ads as `condor_q -json` / `condor_status -json` print
them, the annex's instances, DescribeInstanceTypes entries, prices, the budget and the lease) and
returns a Decision; it calls neither AWS nor HTCondor. A caller (issue 14 step 2: a systemd timer
on the master, as the annex user) gathers the data, launches what the Decision says through the
annex module's launch code and logs Decision.log_line().

Job Requirements and the workers' START are evaluated by HTCondor's own ClassAd library (the
`htcondor2`/`classad2` Python bindings: the `htcondor` wheel on PyPI for tests, the distribution's
python3-htcondor / python3-condor on the master), against the machine ad each allowed instance
type would advertise. Scale-down is not here: workers end by idle shutdown and the lease; this
module never proposes a termination.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json

try:
    # htcondor2 first: importing it registers HTCondor's own ClassAd functions (stringListMember,
    # which the workers' START uses, splitUserName ...) and the matchmaking rule that an attribute
    # a slot ad lacks is looked up in the job ad (START = MayUseAWS == TRUE). classad2 alone
    # evaluates both to error/undefined.
    import htcondor2  # noqa: F401  pylint: disable=unused-import
    import classad2
    HAS_CLASSAD = True
except ImportError:
    HAS_CLASSAD = False

from ansible_collections.htcondor.annex.plugins.module_utils.annex_protocol import render_worker_config

# Share of an instance type's nominal memory (MemoryInfo.SizeInMiB) that the kernel leaves to
# HTCondor's Memory on an EC2 worker (measured MemTotal: about 93-96 %); packing against the
# nominal size would launch workers too small for the jobs that asked for "8 GiB on an 8 GiB type".
MEMORY_VISIBLE_FRACTION = 0.93
# Share of an instance-store disk left free after ext4 formatting and its reserved blocks
# (HTCondor's Disk is the space the job's user can write).
DISK_VISIBLE_FRACTION = 0.93
# Scratch disk of a worker without instance store: the worker image's 10 GiB root volume
# (roles/aws_worker_image) less the installed system; instance store, when the type has it, is
# formatted as EXECUTE by the boot agent and counts instead.
DEFAULT_WORKER_DISK_GIB = 5
# Instances launched and not yet joined count as supply this long (the stock boot script gives up
# after about 50 minutes; a worker not joined after 15 is more likely broken than slow).
DEFAULT_BOOT_BUDGET_MINUTES = 15
DEFAULT_MIN_WORKER_MINUTES = 30
# The job attributes that decide whether and where a job can run (HTCondor's autoclusters do the
# same with the attributes the negotiation references); jobs equal in all of them are one group.
SIGNIFICANT_ATTRS = ("RequestCpus", "RequestMemory", "RequestDisk", "RequestGPUs", "Requirements",
                     "MayUseAWS", "Owner")
# What the caller asks condor_q for (-attributes): the significant ones, the job's id and status,
# and the attributes condor_submit's default requests and Requirements reference (RequestDisk =
# DiskUsage, RequestMemory = ifThenElse(MemoryUsage ...)). An attribute a user's Requirements
# references beyond these reads as undefined.
JOB_ATTRIBUTES = SIGNIFICANT_ATTRS + ("ClusterId", "ProcId", "JobStatus", "User", "DiskUsage", "MemoryUsage",
                                      "ImageSize", "ExecutableSize", "JobUniverse", "WantGPUs")
_SIGNIFICANT_LOWER = dict((a.lower(), a) for a in SIGNIFICANT_ATTRS)
_RESOURCES = ("cpus", "memory", "disk", "gpus")
IDLE = 1  # JobStatus


class AutoscaleError(Exception):
    pass


def require_classad():
    if not HAS_CLASSAD:
        raise AutoscaleError("the autoscaler needs HTCondor's Python bindings (htcondor2/classad2): the "
                             "'htcondor' package from PyPI, or python3-htcondor / python3-condor on the master")


class Policy:
    """The annex's autoscaling settings. lease_end: epoch seconds. owners: None = any user (the
    annex's no_owner), else the list the workers' START restricts to."""

    def __init__(self, annex_name, max_instances, budget_usd, lease_end, owners=None,
                 min_worker_minutes=DEFAULT_MIN_WORKER_MINUTES, boot_budget_minutes=DEFAULT_BOOT_BUDGET_MINUTES,
                 worker_disk_gib=DEFAULT_WORKER_DISK_GIB, zones=None):
        self.annex_name = annex_name
        self.max_instances = int(max_instances)
        self.budget_usd = float(budget_usd)
        self.lease_end = float(lease_end)
        self.owners = list(owners) if owners else None
        self.min_worker_minutes = float(min_worker_minutes)
        self.boot_budget_minutes = float(boot_budget_minutes)
        self.worker_disk_gib = float(worker_disk_gib)
        self.zones = list(zones or [])


class Decision:
    """One run's result. launch: {instance type: count}; demand: idle jobs this annex could run;
    supply: those of them the joined slots' free resources and the pending instances hold; live:
    instances running (joined or not); unrunnable / not_for_annex: {"jobs": n, "example": text}."""

    def __init__(self):
        self.launch = {}
        self.demand = 0
        self.supply = 0
        self.unmet = 0
        self.placed_on_new = 0
        self.live = 0
        self.pending = 0
        self.unrunnable = {"jobs": 0, "example": None}
        self.not_for_annex = {"jobs": 0, "example": None}
        self.spent_usd = 0.0
        self.committed_usd = 0.0
        self.new_usd = 0.0
        self.budget_left_usd = 0.0
        self.groups = 0
        self.reasons = []

    @property
    def reason(self):
        return "; ".join(self.reasons) if self.reasons else "nothing to do"

    def launch_text(self):
        return ",".join("%s:%d" % (t, n) for t, n in sorted(self.launch.items())) or "none"

    def log_line(self):
        return "demand=%d supply=%d live=%d launch=%s spent=$%.2f budget_left=$%.2f reason=%s" % (
            self.demand, self.supply, self.live, self.launch_text(), self.spent_usd, self.budget_left_usd,
            self.reason.replace("\n", " "))

    def to_dict(self):
        return {"launch": dict(self.launch), "demand": self.demand, "supply": self.supply, "unmet": self.unmet,
                "placed_on_new": self.placed_on_new, "live": self.live, "pending": self.pending,
                "unrunnable": dict(self.unrunnable), "not_for_annex": dict(self.not_for_annex),
                "spent_usd": round(self.spent_usd, 4), "committed_usd": round(self.committed_usd, 4),
                "new_usd": round(self.new_usd, 4), "budget_left_usd": round(self.budget_left_usd, 4),
                "job_groups": self.groups, "reason": self.reason}


# ---------------------------------------------------------------- ClassAds


def ad_from_json(ad_dict):
    """A ClassAd from one ad as the tools' -json prints it. Expressions there are strings
    "/Expr(...)/", which HTCondor's JSON parser turns back into expressions only in the escaped
    form the tools write ("\\/Expr(...)\\/"); "\\/" is plain JSON for "/" in every other string."""
    require_classad()
    text = json.dumps(ad_dict).replace("/", "\\/")
    return classad2.parseOne(text, classad2.ParserType.JSON)


def worker_start_expression(annex_name, owners):
    """The START expression the annex's workers get (one home: the worker config renderer)."""
    config = render_worker_config(annex_name, "collector.invalid", None, 1, owners)
    for line in config.splitlines():
        if line.startswith("START = "):
            return line[len("START = "):]
    raise AutoscaleError("the worker config has no START line")


def _gpu_count(info):
    return sum(int(g.get("Count", 0)) for g in (info.get("GpuInfo") or {}).get("Gpus", []))


def _condor_arch(info):
    archs = (info.get("ProcessorInfo") or {}).get("SupportedArchitectures") or ["x86_64"]
    return "X86_64" if "x86_64" in archs else "aarch64" if "arm64" in archs else archs[0]


def type_capacity(info, worker_disk_gib=DEFAULT_WORKER_DISK_GIB):
    """{cpus, memory (MiB), disk (KiB), gpus} a worker of this DescribeInstanceTypes entry offers."""
    store_gb = (info.get("InstanceStorageInfo") or {}).get("TotalSizeInGB")  # decimal GB
    disk_kib = store_gb * 1e9 / 1024 * DISK_VISIBLE_FRACTION if store_gb else float(worker_disk_gib) * 1024 * 1024
    return {"cpus": int(info["VCpuInfo"]["DefaultVCpus"]),
            "memory": int(info["MemoryInfo"]["SizeInMiB"] * MEMORY_VISIBLE_FRACTION),
            "disk": int(disk_kib),
            "gpus": _gpu_count(info)}


def instance_type_ad(info, annex_name, start_expression, worker_disk_gib=DEFAULT_WORKER_DISK_GIB):
    """The partitionable-slot ad a fresh worker of this type would advertise: resources, platform,
    the annex attributes of the worker config (AnnexName, IsAnnex) and its START."""
    require_classad()
    cap = type_capacity(info, worker_disk_gib)
    ad = classad2.ClassAd()
    ad["MyType"] = "Machine"
    ad["SlotType"] = "Partitionable"
    ad["State"] = "Unclaimed"
    ad["Activity"] = "Idle"
    ad["Cpus"] = ad["TotalCpus"] = ad["TotalSlotCpus"] = cap["cpus"]
    ad["Memory"] = ad["TotalMemory"] = ad["TotalSlotMemory"] = cap["memory"]
    ad["Disk"] = ad["TotalDisk"] = ad["TotalSlotDisk"] = cap["disk"]
    ad["GPUs"] = ad["TotalGPUs"] = ad["TotalSlotGPUs"] = cap["gpus"]
    gpus = (info.get("GpuInfo") or {}).get("Gpus") or []
    if gpus and gpus[0].get("MemoryInfo"):
        ad["GPUs_GlobalMemoryMb"] = int(gpus[0]["MemoryInfo"]["SizeInMiB"])
    ad["Arch"] = _condor_arch(info)
    ad["OpSys"] = "LINUX"
    ad["HasFileTransfer"] = True
    ad["EC2InstanceType"] = info["InstanceType"]
    ad["AnnexName"] = annex_name
    ad["IsAnnex"] = True
    ad["Start"] = classad2.ExprTree(start_expression)
    ad["Requirements"] = classad2.ExprTree("START")
    return ad


def _evaluate(ad, attr):
    try:
        return ad.eval(attr)
    except KeyError:
        return None


def _number(ad, attr, default):
    value = _evaluate(ad, attr)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return default
    return value


def job_request(ad):
    """{cpus, memory (MiB), disk (KiB), gpus} a job asks for, evaluated in its own ad."""
    return {"cpus": max(0, _number(ad, "RequestCpus", 1)), "memory": max(0, _number(ad, "RequestMemory", 0)),
            "disk": max(0, _number(ad, "RequestDisk", 0)), "gpus": max(0, _number(ad, "RequestGPUs", 0))}


def _job_id(job):
    return "%s.%s" % (job.get("ClusterId", "?"), job.get("ProcId", "?"))


# ---------------------------------------------------------------- grouping (autoclusters)


class JobGroup:
    def __init__(self, example):
        self.example = example  # the first job dict of the group
        self.count = 0
        self.ad = None
        self.request = None
        self.fit_types = []  # names of allowed types that can run it
        self.remaining = 0


def _significant(job):
    """The job's significant attributes as printed. The tools print the canonical names; an
    attribute under another spelling (a user's +mayuseaws) or absent (RequestGPUs of a CPU job)
    costs one case-insensitive scan of the job."""
    values = []
    lowered = None
    for attr in SIGNIFICANT_ATTRS:
        if attr in job:
            value = job[attr]
        else:
            if lowered is None:
                lowered = dict((k.lower(), v) for k, v in job.items())
            value = lowered.get(attr.lower())
        values.append(json.dumps(value, sort_keys=True) if isinstance(value, (list, dict)) else value)
    return tuple(values)


def _own_refs(ad):
    """Attributes of the job itself that its significant expressions reference (MY.x, or x the
    job has), beyond the significant ones: jobs that differ there must not share a group."""
    refs = set()
    for attr in SIGNIFICANT_ATTRS:
        expr = ad.lookup(attr) if attr in ad else None
        if isinstance(expr, classad2.ExprTree):
            # internalRefs: those the ad has; externalRefs: those it lacks (MemoryUsage of a job
            # that never ran, which its sibling that ran has)
            for ref in list(ad.internalRefs(expr)) + list(ad.externalRefs(expr)):
                ref = ref.lower()
                if ref.startswith("my."):
                    ref = ref[3:]
                if ref and not ref.startswith("target.") and "." not in ref:
                    refs.add(ref)
    return sorted(r for r in refs if r not in _SIGNIFICANT_LOWER)


def group_jobs(jobs):
    """Idle jobs -> [JobGroup], each parsed once. Two passes: by the significant attributes, then,
    where the group's expressions reference other job attributes, by those too."""
    coarse = {}
    for job in jobs:
        status = job.get("JobStatus", IDLE)
        if status != IDLE:
            continue
        coarse.setdefault(_significant(job), []).append(job)
    groups = []
    for members in coarse.values():
        refs = _own_refs(ad_from_json(members[0]))
        if refs:
            fine = {}
            for job in members:
                lowered = dict((k.lower(), v) for k, v in job.items())
                fine.setdefault(tuple(json.dumps(lowered.get(r), sort_keys=True) for r in refs), []).append(job)
            parts = list(fine.values())
        else:
            parts = [members]
        for part in parts:
            group = JobGroup(part[0])
            group.count = len(part)
            group.ad = ad_from_json(part[0])
            group.request = job_request(group.ad)
            groups.append(group)
    return groups


# ---------------------------------------------------------------- packing


class Bin:
    """Free resources of one worker: a joined partitionable slot, a pending or a new instance."""

    def __init__(self, free, type_name=None, ad=None):
        self.free = dict(free)
        self.type_name = type_name
        self.ad = ad  # the joined slot's own ad (None: the type's ad)


def _fits_count(free, request):
    """How many jobs of `request` the free resources hold."""
    n = None
    for res in _RESOURCES:
        need = request[res]
        if need <= 0:
            continue
        k = int(free[res] // need)
        n = k if n is None else min(n, k)
    return 1 if n is None else n  # a job asking for nothing takes one slot


def _place(group, bin_):
    n = min(group.remaining, _fits_count(bin_.free, group.request))
    if n <= 0:
        return 0
    for res in _RESOURCES:
        bin_.free[res] -= n * group.request[res]
    if all(group.request[res] <= 0 for res in _RESOURCES):
        bin_.free["cpus"] = 0
    group.remaining -= n
    return n


def _size_key(group, largest):
    """First-fit decreasing order: the job's largest share of the largest allowed type."""
    return max(group.request[r] / float(largest[r]) for r in _RESOURCES if largest[r] > 0)


# ---------------------------------------------------------------- money


def _price_of(instance, prices):
    price = instance.get("price_per_hour")
    if price is None:
        price = prices.get(instance.get("type"))
    return None if price is None else float(price)


def spend(instances, prices, now, lease_end):
    """(spent, committed, unknown): spent = sum of running time x price over the annex's instances,
    running and ended; committed = live instances x price x hours to lease end; unknown = types
    whose price is not known (a launch is then refused: money-safe)."""
    spent = committed = 0.0
    unknown = set()
    hours_left = max(0.0, (lease_end - now) / 3600.0)
    for inst in instances:
        price = _price_of(inst, prices)
        if price is None:
            unknown.add(inst.get("type"))
            continue
        end = inst.get("end_time")
        stop = now if end is None else min(float(end), now)
        spent += max(0.0, stop - float(inst["launch_time"])) / 3600.0 * price
        if end is None:
            committed += price * hours_left
    return spent, committed, unknown


# ---------------------------------------------------------------- the decision


def _classify(group, type_ads, capacities, start_expression, owners):
    """None when some allowed type can run the group (group.fit_types set), else
    ("not_for_annex" | "unrunnable", example reason)."""
    ad, jid = group.ad, _job_id(group.example)
    start = classad2.ExprTree(start_expression).eval(type_ads[sorted(type_ads)[0]], ad) if type_ads else True
    if start is not True:
        if _evaluate(ad, "MayUseAWS") is not True:
            return "not_for_annex", "job %s: MayUseAWS is not true" % jid
        return "not_for_annex", "job %s: owner %s is not among the annex's owners %s" % (
            jid, ad.get("Owner"), ",".join(owners or []))
    big_enough = [n for n in sorted(type_ads) if _fits_count(capacities[n], group.request) >= 1]
    group.fit_types = [n for n in big_enough if ad.symmetricMatch(type_ads[n])]
    if group.fit_types:
        return None
    if not big_enough:
        req = group.request
        asks = "RequestCpus %s, RequestMemory %s MiB, RequestDisk %s KiB, RequestGPUs %s" % (
            req["cpus"], req["memory"], req["disk"], req["gpus"])
        return "unrunnable", "job %s: %s: more than any allowed type offers (%s)" % (
            jid, asks, ", ".join(sorted(type_ads)))
    return "unrunnable", "job %s: Requirements %s false on every allowed type big enough (%s)" % (
        jid, ad.lookup("Requirements") if "Requirements" in ad else "(none)", ", ".join(big_enough))


def _note(counter, jobs, example):
    counter["jobs"] += jobs
    if counter["example"] is None:
        counter["example"] = example


def decide(jobs, slots, instances, instance_types, prices, policy, now, backoff=None):
    """One decision. jobs: idle job ads (dicts as `condor_q -json`); slots: the annex's machine ads
    (`condor_status -json -annex NAME`); instances: the annex's instances, running and ended, each
    {"id", "type", "launch_time", "end_time" (None while running), "joined", optional
    "price_per_hour"}; instance_types: DescribeInstanceTypes entries of the allowed types;
    prices: {type: USD per hour} for new launches (and for instances without their own price);
    backoff: a CapacityBackoff (its state changes: the caller stores to_dict() again)."""
    require_classad()
    decision = Decision()
    start_expression = worker_start_expression(policy.annex_name, policy.owners)
    infos = dict((i["InstanceType"], i) for i in instance_types)
    capacities = dict((n, type_capacity(i, policy.worker_disk_gib)) for n, i in infos.items())
    type_ads = dict((n, instance_type_ad(i, policy.annex_name, start_expression, policy.worker_disk_gib))
                    for n, i in infos.items())

    # demand
    groups = group_jobs(jobs)
    decision.groups = len(groups)
    demand = []
    for group in groups:
        verdict = _classify(group, type_ads, capacities, start_expression, policy.owners)
        if verdict is None:
            group.remaining = group.count
            decision.demand += group.count
            demand.append(group)
        else:
            _note(decision.unrunnable if verdict[0] == "unrunnable" else decision.not_for_annex,
                  group.count, verdict[1])

    # money and the live fleet
    live = [i for i in instances if i.get("end_time") is None]
    decision.live = len(live)
    spent, committed, unknown = spend(instances, prices, now, policy.lease_end)
    decision.spent_usd, decision.committed_usd = spent, committed
    decision.budget_left_usd = policy.budget_usd - spent - committed

    # supply: free resources of joined slots, then instances still booting within the boot budget
    bins = []
    for slot in slots:
        kind = slot.get("SlotType", "Static")
        if kind == "Dynamic" or (kind == "Static" and slot.get("State") != "Unclaimed"):
            continue  # claimed resources: not free
        ad = ad_from_json(slot)
        free = {"cpus": _number(ad, "Cpus", 0), "memory": _number(ad, "Memory", 0),
                "disk": _number(ad, "Disk", 0), "gpus": _number(ad, "GPUs", 0)}
        bins.append(Bin(free, slot.get("EC2InstanceType"), ad))
    boot_budget = policy.boot_budget_minutes * 60.0
    for inst in live:
        if inst.get("joined") or inst.get("type") not in capacities:
            continue  # joined: its slots are counted above; of a type no longer allowed: unknown shape
        if now - float(inst["launch_time"]) <= boot_budget:
            bins.append(Bin(capacities[inst["type"]], inst["type"]))
            decision.pending += 1

    largest = dict((r, max([c[r] for c in capacities.values()] or [0])) for r in _RESOURCES)
    demand.sort(key=lambda g: (-_size_key(g, largest), _job_id(g.example)))
    for group in demand:
        for bin_ in bins:
            if group.remaining == 0:
                break
            if bin_.ad is not None:
                if not group.ad.symmetricMatch(bin_.ad):
                    continue
            elif bin_.type_name not in group.fit_types:
                continue
            decision.supply += _place(group, bin_)
    decision.unmet = sum(g.remaining for g in demand)

    reasons = decision.reasons
    if decision.unrunnable["jobs"]:
        reasons.append("%d jobs no allowed type can run (e.g. %s)" % (
            decision.unrunnable["jobs"], decision.unrunnable["example"]))
    if decision.not_for_annex["jobs"]:
        reasons.append("%d jobs not for this annex (e.g. %s)" % (
            decision.not_for_annex["jobs"], decision.not_for_annex["example"]))
    if backoff is not None:
        backoff.note_change(sorted(infos), policy.zones, decision.demand, now)
        if backoff.stopped():
            reasons.append("not trying %s after %d capacity failures in a row, until the allowed types or zones "
                           "change or demand grows" % (", ".join(backoff.stopped()), backoff.give_up_after))
    if decision.unmet == 0:
        reasons.insert(0, "no unmet demand" if decision.demand else "no idle jobs for this annex")
        return decision
    minutes_left = (policy.lease_end - now) / 60.0
    if minutes_left < policy.min_worker_minutes:
        reasons.insert(0, "%d jobs unmet but the lease ends in %.0f min (< min_worker_minutes %g): no launch" % (
            decision.unmet, max(0.0, minutes_left), policy.min_worker_minutes))
        return decision
    if unknown:
        reasons.insert(0, "no launch: no price for running instance types %s" % ", ".join(sorted(map(str, unknown))))
        return decision
    _launch_new(decision, demand, infos, capacities, prices, policy, now, backoff)
    return decision


class _Plan:
    def __init__(self):
        self.launch = {}
        self.usd = 0.0
        self.placed = 0
        self.limits = []


def _rank(candidates, group, capacities, prices, most_jobs):
    """The types for the group's next worker, best first: the lowest price per job it holds
    (most_jobs: the most jobs it holds, then price per job)."""
    def held(name):
        return min(group.remaining, _fits_count(capacities[name], group.request))

    def cost_per_job(name):
        return float(prices[name]) / held(name)
    if most_jobs:
        return sorted(candidates, key=lambda t: (-held(t), cost_per_job(t), t))
    return sorted(candidates, key=lambda t: (cost_per_job(t), float(prices[t]), t))


def _pack_new(demand, capacities, prices, room, budget_left, hours_left, blocked, most_jobs=False):
    """New workers for the groups' remaining jobs, first-fit decreasing: each group first fills
    the room left in the workers opened for earlier groups, then opens workers of the type with
    the lowest price per job it holds, while the room (max_instances) and the budget allow.
    most_jobs (when they do not allow all): the groups and types that fit the most jobs on one
    worker first, then price."""
    plan = _Plan()
    new_bins = []
    if most_jobs:  # the groups that fit the most jobs on one worker first
        demand = sorted(demand, key=lambda g: -max(
            [_fits_count(capacities[t], g.request) for t in g.fit_types] or [0]))
    for group in demand:
        for bin_ in new_bins:
            if group.remaining == 0:
                break
            if bin_.type_name in group.fit_types:
                plan.placed += _place(group, bin_)
        while group.remaining > 0:
            candidates = [t for t in group.fit_types if t not in blocked and prices.get(t) is not None]
            if not candidates:
                backing_off = sorted(set(group.fit_types) & blocked)
                plan.limits.append("no usable type for %d jobs like %s (%s)" % (
                    group.remaining, _job_id(group.example),
                    "backing off: %s" % ", ".join(backing_off) if backing_off else "no price"))
                break
            if len(new_bins) >= room:
                plan.limits.append("max_instances reached")
                break
            ranked = _rank(candidates, group, capacities, prices, most_jobs)
            left = budget_left - plan.usd
            affordable = [t for t in ranked if float(prices[t]) * hours_left <= left + 1e-9]
            if not affordable:
                cheapest = min(candidates, key=lambda t: float(prices[t]))
                plan.limits.append("budget: a %s ($%.4f/h x %.2f h to lease end = $%.2f) exceeds budget left $%.2f" % (
                    cheapest, float(prices[cheapest]), hours_left, float(prices[cheapest]) * hours_left, left))
                break
            choice = affordable[0]
            bin_ = Bin(capacities[choice], choice)
            new_bins.append(bin_)
            plan.launch[choice] = plan.launch.get(choice, 0) + 1
            plan.usd += float(prices[choice]) * hours_left
            plan.placed += _place(group, bin_)
    return plan


def _launch_new(decision, demand, infos, capacities, prices, policy, now, backoff):
    hours_left = (policy.lease_end - now) / 3600.0
    room = policy.max_instances - decision.live
    blocked = set()
    if backoff is not None:
        blocked = set(name for name in infos if not backoff.usable_zones(name, policy.zones, now))
    before = [g.remaining for g in demand]
    args = (demand, capacities, prices, room, decision.budget_left_usd, hours_left, blocked)
    plan = _pack_new(*args)
    if "max_instances reached" in plan.limits or any(l.startswith("budget") for l in plan.limits):
        # Not every job gets a worker: of the cheapest packing and the one that runs the most
        # jobs with the workers allowed, take the one that runs more (a deadline needs jobs running).
        cheapest_remaining = [g.remaining for g in demand]
        for group, remaining in zip(demand, before):
            group.remaining = remaining
        most = _pack_new(*args, most_jobs=True)
        if most.placed <= plan.placed:
            for group, remaining in zip(demand, cheapest_remaining):
                group.remaining = remaining
        else:
            plan = most
    decision.launch = plan.launch
    decision.new_usd = plan.usd
    decision.placed_on_new = plan.placed
    decision.budget_left_usd -= plan.usd
    waiting = sum(g.remaining for g in demand)
    limits = [("max_instances %d reached (%d live)" % (policy.max_instances, decision.live))
              if l == "max_instances reached" else l for l in plan.limits]
    head = "launch %s for %d unmet jobs" % (decision.launch_text(), decision.unmet) if decision.launch else \
        "%d jobs unmet, no launch" % decision.unmet
    if waiting:
        head += "; %d still wait: %s" % (waiting, "; ".join(_unique(limits)))
    decision.reasons.insert(0, head)


def _unique(items):
    seen = []
    for item in items:
        if item not in seen:
            seen.append(item)
    return seen


# ---------------------------------------------------------------- capacity backoff


class CapacityBackoff:
    """Back-off per pool (instance type x zone) after capacity errors (InsufficientInstanceCapacity
    and the like): wait base, 2 base, 4 base ... seconds, at most `cap`; after `give_up_after`
    failures in a row the pool is stopped until the next change: the allowed types or zones
    differ, or the demand grew since the last run. The state is a small JSON-able dict; step 2
    keeps it in a file in the annex user's state directory on the master (written after each run)."""

    def __init__(self, state=None, base=60, cap=3600, give_up_after=5):
        self.base = float(base)
        self.cap = float(cap)
        self.give_up_after = int(give_up_after)
        state = state or {}
        self.pools = dict((k, dict(v)) for k, v in (state.get("pools") or {}).items())
        self.seen = state.get("seen")  # {"pools": [...], "demand": n} of the last run

    @staticmethod
    def pool(instance_type, zone):
        return "%s/%s" % (instance_type, zone or "*")

    def to_dict(self):
        return {"pools": self.pools, "seen": self.seen}

    @classmethod
    def from_dict(cls, state, **kwargs):
        return cls(state, **kwargs)

    def record_failure(self, instance_type, zone, now):
        entry = self.pools.setdefault(self.pool(instance_type, zone), {"failures": 0})
        entry["failures"] += 1
        delay = min(self.cap, self.base * 2 ** (entry["failures"] - 1))
        entry["until"] = now + delay
        entry["stopped"] = entry["failures"] >= self.give_up_after
        return entry

    def record_success(self, instance_type, zone):
        self.pools.pop(self.pool(instance_type, zone), None)

    def blocked(self, instance_type, zone, now):
        entry = self.pools.get(self.pool(instance_type, zone))
        return bool(entry) and (entry.get("stopped") or now < entry.get("until", 0))

    def usable_zones(self, instance_type, zones, now):
        """The zones of `zones` (no zones: the region as one pool) the type may be tried in now."""
        return [z for z in (zones or [None]) if not self.blocked(instance_type, z, now)]

    def stopped(self):
        return sorted(k for k, v in self.pools.items() if v.get("stopped"))

    def note_change(self, types, zones, demand, now):
        """A change (other allowed pools, or more demand than last run) lets stopped pools try
        again, once, from the start of the back-off."""
        pools = sorted(self.pool(t, z) for t in types for z in (zones or [None]))
        last = self.seen or {}
        changed = last and (last.get("pools") != pools or demand > last.get("demand", 0))
        if changed:
            for key in [k for k, v in self.pools.items() if v.get("stopped")]:
                del self.pools[key]
        self.seen = {"pools": pools, "demand": int(demand)}
        return bool(changed)
