"""Tables. Columns and indexes only: the rules about them live in app.core. One module per part:
the pipeline's own rows, where deliveries go, and what the operator keeps."""

from __future__ import annotations

from app.db.models.destinations import Destination as Destination
from app.db.models.destinations import DestinationEvent as DestinationEvent
from app.db.models.destinations import Recovery as Recovery
from app.db.models.destinations import RecoveryEvent as RecoveryEvent
from app.db.models.destinations import Subscription as Subscription
from app.db.models.ids import IDS_NEVER_REUSED as IDS_NEVER_REUSED
from app.db.models.ids import table_of as table_of
from app.db.models.operator import ApiKey as ApiKey
from app.db.models.operator import File as File
from app.db.models.operator import Owner as Owner
from app.db.models.operator import Setting as Setting
from app.db.models.operator import UiSession as UiSession
from app.db.models.pipeline import UNFINISHED_WITH_DEADLINE as UNFINISHED_WITH_DEADLINE
from app.db.models.pipeline import Batch as Batch
from app.db.models.pipeline import BatchEvent as BatchEvent
from app.db.models.pipeline import Delivery as Delivery
from app.db.models.pipeline import DeliveryAttempt as DeliveryAttempt
from app.db.models.pipeline import Request as Request
from app.db.models.pipeline import RequestEvent as RequestEvent
from app.db.models.pipeline import delivery_public_id as delivery_public_id
