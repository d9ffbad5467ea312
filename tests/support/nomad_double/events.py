"""Event-stream subscriptions: which events of the buffer a `GET /v1/event/stream` client receives.

`topic=Allocation:<key>` matches an event whose `Key` or one of its `FilterKeys` is `<key>`
(nomad-api.md §3.7); `*` matches every topic or every key. No topic at all means `*:*`.
"""

from __future__ import annotations

from dataclasses import dataclass

from .state import Event, Frame

WILDCARD = "*"


@dataclass(frozen=True)
class Subscription:
    topics: dict[str, frozenset[str]]  # topic → keys
    namespace: str  # "*" for every namespace

    @classmethod
    def parse(cls, values: list[str], namespace: str) -> Subscription:
        topics: dict[str, set[str]] = {}
        for value in values or [f"{WILDCARD}:{WILDCARD}"]:
            topic, _, key = value.partition(":")
            topics.setdefault(topic, set()).add(key or WILDCARD)
        return cls({t: frozenset(k) for t, k in topics.items()}, namespace)

    @property
    def wants_everything(self) -> bool:
        """Subscribing to topic `*` needs a management token when ACLs are on (nomad-api.md §0.13)."""
        return WILDCARD in self.topics

    def matches(self, event: Event) -> bool:
        keys = self.topics.get(event.topic, frozenset()) | self.topics.get(WILDCARD, frozenset())
        if not keys:
            return False
        # Events without a namespace (nodes, operator) reach every subscriber.
        if self.namespace != WILDCARD and event.namespace not in ("", self.namespace):
            return False
        return WILDCARD in keys or event.key in keys or any(k in keys for k in event.filter_keys)

    def render(self, frame: Frame) -> bytes | None:
        """The frame's ndjson line for this subscriber, or None when none of its events match."""
        events = [e.text for e in frame.events if self.matches(e)]
        if not events:
            return None
        return f'{{"Index":{frame.index},"Events":[{",".join(events)}]}}\n'.encode()
