"""(to be written)"""

from fastapi import APIRouter

from infracloud.api.deps import OpsReader

router = APIRouter(prefix="/ops/v1", tags=["operations"], dependencies=[OpsReader])
