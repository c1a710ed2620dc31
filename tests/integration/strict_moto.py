# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""``moto_server`` whose S3 conditional writes are atomic, as S3's are (MotoServer(strict_s3=True)).

moto checks PutObject's If-None-Match / If-Match and DeleteObject's If-Match in its S3 request
handler (moto.s3.responses.S3Response.put_object / delete_object: it looks the key up, then
writes or deletes it in a separate step) and serves requests from several threads (werkzeug,
threaded=True). Two conditional writes racing on one key can therefore both pass the check, so
two runs could both "create" the launch lock: a test of the lock against plain moto could pass or
fail by luck. Here one lock serialises those two handlers, so check and write are one step, as on
S3 (which answers the loser 412, or 409 ConditionalRequestConflict). Nothing else of moto changes.

    python tests/integration/strict_moto.py -H 127.0.0.1 -p PORT   (moto_server's arguments)
"""
import sys
import threading

from moto.s3.responses import S3Response
from moto.server import main

_ONE_AT_A_TIME = threading.Lock()


def _atomic(handler):
    def serialised(self, *args, **kwargs):
        with _ONE_AT_A_TIME:
            return handler(self, *args, **kwargs)
    serialised.__name__ = handler.__name__
    return serialised


S3Response.put_object = _atomic(S3Response.put_object)
S3Response.delete_object = _atomic(S3Response.delete_object)

if __name__ == "__main__":
    sys.exit(main())
