"""Input adapters for agent traces and reasoning records, one module per format family.

Each module parses one published shape into the normalised :class:`~.model.Conversation`
(roles system / user / assistant / tool; parts Text / Think / Call); ``detect.py`` holds the
registry and detection order; ``stepcrawl.sources.tool_use`` renders a Conversation into text
and loss spans for both ``ingest tool-use`` and ``ingest reasoning``.
"""

from stepcrawl.sources.formats.detect import detect_format, formats_for, get_format, is_message_or_event, list_formats
from stepcrawl.sources.formats.model import Call, Conversation, FormatError, FormatOptions, Message, Text, Think

__all__ = ["Call", "Conversation", "FormatError", "FormatOptions", "Message", "Text", "Think",
           "detect_format", "formats_for", "get_format", "is_message_or_event", "list_formats"]
