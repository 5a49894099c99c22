"""The ROS 2 message types every bag reader and writer here uses (``rosbags``' typestore, no ROS install), and the
error they raise: one module below ``bag``, ``bag_writer`` and ``rollout``, so none of them imports another for it."""

from __future__ import annotations

from rosbags.typesys import Stores, get_typestore

from ..errors import UserError

TYPESTORE = get_typestore(Stores.ROS2_KILTED)


class BagError(UserError, ValueError):
    """A bag cannot be read or written; the message names it."""
