import orjson
from rest_framework.exceptions import ParseError
from rest_framework.parsers import BaseParser


class OrjsonParser(BaseParser):
    """JSON parsing with orjson, for every API view: several times faster than the standard library, and
    strict where DRF's JSONParser is not (it recurses once per nesting level, so 10,000 levels raised
    RecursionError, and it accepts lone UTF-16 surrogates and NaN/Infinity that later fail as a 500):
    orjson answers all of these ParseError (400 malformed_json), in one parse of the body."""

    media_type = "application/json"
    strict_json = True  # TenantScopedAPIView parses such bodies before checking the tenant and operation

    def parse(self, stream, media_type=None, parser_context=None):
        try:
            return orjson.loads(stream.read())
        except orjson.JSONDecodeError as exc:
            raise ParseError(f"Malformed JSON: {exc}") from None
