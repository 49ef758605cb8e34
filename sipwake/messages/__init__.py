"""The inbox: store-and-forward instant messages (RFC 3428 MESSAGE, RFC 3862 CPIM).

inbox.py is the flow (accept → store → deliver or push); content.py reads bodies,
delivery.py sends stored messages to devices, notify.py coalesces pushes,
limits.py is the per-sender rate limit.
"""
