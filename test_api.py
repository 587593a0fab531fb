"""The spec's usage line, `python test_api.py path/to/test/image.jpg`: the same CLI as the
`face-analytics` console script (face_analytics_client/cli.py); `--help` lists the options."""

import sys

from face_analytics_client.cli import main

if __name__ == "__main__":
    sys.exit(main())
