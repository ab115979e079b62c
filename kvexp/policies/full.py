from kvexp.policies.base import Policy


class Full(Policy):
    """The uncompressed reference: keeps every token, so its budget is recorded as null."""

    name = "full"
    evicts = False

    def score(self, state, view, ctx):
        raise RuntimeError("policy 'full' never evicts")
