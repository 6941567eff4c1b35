"""Exit 0 when the PostgreSQL URL given as the argument accepts a connection."""

import asyncio
import sys

from sqlalchemy import text

from src.db.engine import create_engine


async def _reachable(url: str) -> bool:
    engine = create_engine(url)
    try:
        async with engine.connect() as connection:
            await asyncio.wait_for(connection.execute(text("SELECT 1")), timeout=5)
        return True
    except Exception:
        return False
    finally:
        await engine.dispose()


if __name__ == "__main__":
    sys.exit(0 if asyncio.run(_reachable(sys.argv[1])) else 1)
