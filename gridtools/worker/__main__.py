"""python3 -m gridtools.worker: the same as gridd worker."""

import sys

from gridtools.worker import serve

sys.exit(serve.main())
