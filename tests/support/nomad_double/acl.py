"""ACL tokens as the double knows them: each secret maps to a policy, which grants capabilities.

A policy is a string of words: `management` (everything), the namespace policies `read`, `write` and `scale`
(expanded as acl/policy.go expandNamespacePolicy does), single namespace capabilities (`read-job`,
`list-jobs`, `scale-job`, `submit-job`, `promote-deployment` ...) and `node:read` / `node:write`. For
compatibility the two policies the double always had keep their meaning when given alone: `read-job` is the
`read` policy and `submit-job` the `write` policy, in the default namespace's rules for every namespace.

Every endpoint turns an authentication failure of any kind into `Permission denied` (nomad/auth/auth.go, e.g.
nomad/job_endpoint.go Register), so an unknown token and a missing capability answer alike: 403.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

# acl/policy.go expandNamespacePolicy
READ = frozenset(
    {
        "list-jobs", "parse-job", "read-job", "csi-list-volume", "csi-read-volume", "read-job-scaling",
        "list-scaling-policies", "read-scaling-policy", "host-volume-read",
    }
)  # fmt: skip
WRITE = READ | {
    "scale-job", "submit-job", "dispatch-job", "read-logs", "read-fs", "alloc-exec", "alloc-lifecycle",
    "csi-mount-volume", "csi-write-volume", "submit-recommendation", "host-volume-create",
}  # fmt: skip
SCALE = frozenset(
    {
        "list-scaling-policies", "read-scaling-policy", "read-job-scaling", "scale-job", "read-job",
        "submit-recommendation",
    }
)  # fmt: skip
POLICIES = {"read": READ, "write": WRITE, "scale": SCALE}
LEGACY = {"read-job": READ, "submit-job": WRITE}
NODE_READ = "node:read"
NODE_WRITE = "node:write"
MANAGEMENT = "management"
DENIED = "Permission denied"


@dataclass(frozen=True)
class Token:
    grants: frozenset[str]

    @property
    def management(self) -> bool:
        return MANAGEMENT in self.grants

    def allows(self, *capabilities: str) -> bool:
        """Any one of `capabilities` (AllowNsOpAnyOf); `node:read` also comes with `node:write`."""
        if self.management:
            return True
        if NODE_READ in capabilities and NODE_WRITE in self.grants:
            return True
        return any(c in self.grants for c in capabilities)


def parse_policy(policy: str) -> Token:
    """The capabilities a policy string grants."""
    words = policy.replace(",", " ").split()
    if len(words) == 1 and words[0] in LEGACY:
        return Token(LEGACY[words[0]])
    grants: set[str] = set()
    for word in words:
        grants |= POLICIES.get(word, {word})
    return Token(frozenset(grants))


def resolve(tokens: Mapping[str, str], secret: str) -> Token | None:
    """The token of a secret; None for no token or an unknown one (both are refused with Permission denied:
    the double has no anonymous policy)."""
    policy = tokens.get(secret) if secret else None
    return parse_policy(policy) if policy is not None else None
