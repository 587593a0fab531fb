import sys

from face_analytics_client.cli import main

sys.exit(main())
