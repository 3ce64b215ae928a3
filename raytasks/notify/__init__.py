"""Notification channels: webhooks and email, fed from the store's event outbox."""

from .dispatcher import Dispatcher
from .webhooks import check_target, sign, verify

__all__ = ["Dispatcher", "check_target", "sign", "verify"]
