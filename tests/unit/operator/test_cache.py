"""The watch-fed cache: children grouped by their ModelService, newest version kept, status write-back."""

from __future__ import annotations

from typing import Any

from modelservice_operator.cache import ObjectCache
from modelservice_operator.naming import NAME_LABEL, label_value


def obj(kind: str, name: str, owner: str, rv: str, uid: str = "u1", **extra: Any) -> dict[str, Any]:
    return {"kind": kind, "metadata": {"name": name, "namespace": "ml", "resourceVersion": rv, "uid": uid,
                                       "labels": {NAME_LABEL: owner}, "managedFields": [{"manager": "x"}]}, **extra}  # fmt: skip


def test_children_are_found_by_their_modelservice_and_events_name_the_owner() -> None:
    cache = ObjectCache()
    assert cache.upsert_child(obj("Pod", "iris-1", "iris", "5")) is None  # owner not known yet
    cache.upsert_modelservice({"metadata": {"name": "iris", "namespace": "ml", "resourceVersion": "1"}})
    assert cache.upsert_child(obj("Pod", "iris-2", "iris", "6")) == ("ml", "iris")
    assert [p["metadata"]["name"] for p in cache.children("ml", "iris", "Pod")] == ["iris-1", "iris-2"]
    assert "managedFields" not in cache.children("ml", "iris", "Pod")[0]["metadata"]


def test_an_older_watch_event_does_not_replace_what_a_write_returned() -> None:
    cache = ObjectCache()
    cache.upsert_child(obj("Deployment", "iris", "iris", "12", spec={"replicas": 2}))
    cache.upsert_child(obj("Deployment", "iris", "iris", "11", spec={"replicas": 5}))
    assert cache.children("ml", "iris", "Deployment")[0]["spec"] == {"replicas": 2}


def test_what_a_write_returned_never_hides_a_change_the_watch_already_brought() -> None:
    cache = ObjectCache()
    cache.upsert_child(obj("Deployment", "iris", "iris", "12", status={"readyReplicas": 2}))
    cache.upsert_child(obj("Deployment", "iris", "iris", "12", status={}), written=True)
    assert cache.children("ml", "iris", "Deployment")[0]["status"] == {"readyReplicas": 2}
    cache.upsert_child(obj("Deployment", "iris", "iris", "13", status={}), written=True)
    assert cache.children("ml", "iris", "Deployment")[0]["status"] == {}


def test_a_delete_of_an_older_incarnation_keeps_the_new_one() -> None:
    cache = ObjectCache()
    cache.upsert_child(obj("Service", "iris", "iris", "20", uid="new"))
    cache.remove_child(obj("Service", "iris", "iris", "19", uid="old"))
    assert len(cache.children("ml", "iris", "Service")) == 1
    cache.remove_child(obj("Service", "iris", "iris", "21", uid="new"))
    assert cache.children("ml", "iris", "Service") == []


def test_the_status_we_wrote_lands_on_the_newest_spec_the_cache_has() -> None:
    cache = ObjectCache()
    cache.upsert_modelservice({"metadata": {"name": "iris", "namespace": "ml", "resourceVersion": "3"},
                               "spec": {"replicas": 1}})  # fmt: skip
    cache.set_status("ml", "iris", {"observedGeneration": 2})
    body = cache.modelservice("ml", "iris")
    assert (
        body is not None and body["spec"] == {"replicas": 1} and body["status"] == {"observedGeneration": 2}
    )


def test_long_names_are_grouped_by_their_fitted_label_value() -> None:
    cache = ObjectCache()
    name = "m" * 200
    cache.upsert_modelservice({"metadata": {"name": name, "namespace": "ml"}})
    assert cache.upsert_child(obj("Pod", "p", label_value(name), "1")) == ("ml", name)
