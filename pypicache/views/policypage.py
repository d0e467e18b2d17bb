"""The dashboard's policy page: the rules in force, what was refused recently and for whom,
and when each held release passes (/policy, and /policy.json for scripts)."""
from __future__ import annotations

from flask import Blueprint, jsonify, render_template

from ..catalogrefusals import REFUSALS_KEPT
from ..stats import policyreport
from . import services

bp = Blueprint("policy", __name__)


def _model() -> policyreport.PolicyPage:
    found = services()
    return policyreport.build(found.policy, found.catalog, found.settings.policy_file,
                              REFUSALS_KEPT)


@bp.get("/policy")
def page():
    # Without a policy the page says so (200): a 404 would read as a wrong link.
    return render_template("browse/policy.html", p=_model())


@bp.get("/policy.json")
def page_json():
    return jsonify(_model().as_dict())
