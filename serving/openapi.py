"""The OpenAPI side of a served bundle's HTTP contract: the JSON schemas /openapi.json shows, from the
`serving.schema.RequestChecker` that checks the requests: every feature, its type and, for categories, the known
values; for text, that it is a non-empty string truncated to max_length tokens; the response's fields."""
from __future__ import annotations

from typing import Any, Optional

from serving.schema import _CATEGORY, _IMAGE, _KINDS, _NUMBER, _TEXT, RequestChecker


def openapi_components(checker: RequestChecker, task: str, classes: Optional[list]) -> dict:
    """JSON schemas for /openapi.json: Record (every feature), PredictRequest, PredictResponse, Error; as `checker`
    (the server's RequestChecker) takes requests."""
    properties = {}
    for name, f in checker.features.items():
        if checker.kinds[name] == _IMAGE:
            img = checker.image
            prop = {"type": ["string", "array"], "contentEncoding": "base64",
                    "description": f"the image: base64 of an encoded file ({', '.join(img['accepted'][:-2])}) "
                                   f"of at most {checker.max_image_pixels:,} pixels, "
                                   f"resized to {img['size'][0]}x{img['size'][1]}, "
                                   f"{'greyscale' if img['channels'] == 1 else 'RGB'}; or a pixel array "
                                   f"{img['pixels']}"}
        elif checker.kinds[name] == _TEXT:
            required = name in checker.required
            blank = name in checker.blank_text
            prop = {"type": "string" if required else ["string", "null"],
                    **({} if blank else {"minLength": 1, "pattern": r"\S"}),
                    "description": f"text{'' if required else ' (optional: null or omitted)'}; "
                                   f"{'may be empty (training read empty text here)' if blank else 'not empty'}; "
                                   f"tokenized and truncated to its first {f.get('max_length')} tokens, "
                                   "the part the model reads"}
            if f.get("max_length") is not None:
                prop["x-max-tokens"] = f["max_length"]
        elif checker.kinds[name] == _NUMBER:
            prop = {"type": ["number", "null"], "description": f"number ({f.get('dtype', 'double')}); "
                                                               f"missing or null: {f.get('missing')}"}
        else:
            cats = list(f.get("categories") or [])
            if checker.reject_unknown_categories:
                prop = {"enum": cats + [None],
                        "description": f"category; one of {', '.join(cats)} (unseen values are rejected); "
                                       f"missing or null: {f.get('missing')}"}
            else:
                prop = {"type": ["string", "integer", "boolean", "null"], "examples": cats,
                        "description": f"category; known: {', '.join(cats)}; any other value maps to the "
                                       f"'unknown' slot; missing or null: {f.get('missing')}"}
            prop["x-categories"] = cats
        if name in checker.required and checker.kinds[name] in (_NUMBER, _CATEGORY):     # null is refused too
            if "type" in prop:
                prop["type"] = [t for t in prop["type"] if t != "null"]
            if "enum" in prop:
                prop["enum"] = [c for c in prop["enum"] if c is not None]
            prop["description"] = prop["description"].replace(
                f"missing or null: {f.get('missing')}", "required by this server (serve.required_features)")
        prop["title"] = name
        prop["x-feature-type"] = f["type"]
        properties[name] = prop
    record = {"type": "object", "title": "Record", "properties": properties,
              "description": "One row: feature name → value. Features may be omitted (imputed) unless listed "
                             "in required."}
    if checker.required:
        record["required"] = list(checker.required)
    if checker.reject_unknown_fields:
        record["additionalProperties"] = False
    example = example_record({"features": list(checker.features.values())})
    request = {"type": "object", "title": "PredictRequest", "required": ["records"],
               "additionalProperties": False,
               "properties": {"records": {"type": "array", "minItems": 1, "maxItems": checker.max_records,
                                          "items": {"$ref": "#/components/schemas/Record"}}},
               "example": {"records": [example]}}
    prediction = ({"enum": list(classes)} if task == "classification" and classes else {"type": "number"})
    response = {"type": "object", "title": "PredictResponse", "required": ["predictions", "model", "request_id"],
                "properties": {
                    "predictions": {"type": "array", "items": prediction,
                                    "description": "One per record, in order."},
                    "request_id": {"type": "string", "description": "This request's id (32 hex digits): the "
                                   "prediction log's request_id, which labels are joined on."},
                    "model": {"type": "object", "properties": {"name": {"type": "string"},
                                                               "version": {"type": "string"}}}}}
    if task == "classification":
        response["properties"]["probabilities"] = {
            "type": "array", "items": {"type": "array", "items": {"type": "number"}},
            "description": f"Per record, the probability of each class in this order: {classes}"}
    if _NUMBER in checker.kinds.values():
        response["properties"]["out_of_range"] = {"type": "array", "description": (
            "Only when a record holds a number past the train split's range (trained_on: its min and max) by "
            "over a tenth of that range: the model extrapolates there, so its answer, given all the same, may "
            "be far off."),
            "items": {"type": "object", "properties": {
                "record": {"type": "integer"}, "field": {"type": "string"}, "value": {"type": "number"},
                "trained_on": {"type": "array", "items": {"type": "number"}, "minItems": 2, "maxItems": 2}}}}
    if _CATEGORY in checker.kinds.values() and not checker.reject_unknown_categories:
        response["properties"]["unseen_categories"] = {"type": "array", "description": (
            "Only when a record holds a category value the train split did not hold: the model answers it as its "
            "unknown category, as it does a missing value (a spelling of a known value is better mended)."),
            "items": {"type": "object", "properties": {
                "record": {"type": "integer"}, "field": {"type": "string"},
                "value": {"type": ["string", "integer", "number", "boolean"]}}}}
    if checker.text:
        response["properties"]["truncated"] = {"type": "array", "description": (
            "Only when a record's text (its text fields joined) is longer than the model's max_length tokens: "
            "the model read its first `read` tokens alone, and the rest made no difference to the answer."),
            "items": {"type": "object", "properties": {
                "record": {"type": "integer"}, "tokens": {"type": "integer"}, "read": {"type": "integer"}}}}
    if checker.imputable:
        response["properties"]["imputed_in_every_record"] = {"type": "array", "items": {"type": "string"},
                                                              "description": (
            "Only when no record of the request sends these features (left out, or null): the model answers with "
            "them imputed (the train split's median, or the unknown category; a text the training data left empty "
            "in some rows: read as empty text, also when sent blank).")}
        response["properties"]["imputed"] = {"type": "array", "description": (
            "Only when a record leaves out (or sends as null) a feature that other records of the request send: "
            "the model answers it with that feature imputed."),
            "items": {"type": "object", "properties": {"record": {"type": "integer"}, "field": {"type": "string"}}}}
    error = {"type": "object", "title": "Error", "properties": {
        "detail": {"type": "string", "description": "What is wrong and how to fix it."},
        "errors": {"type": "array", "items": {"type": "object", "properties": {
            "record": {"type": "integer", "description": "Index of the record in 'records'."},
            "field": {"type": "string"}, "message": {"type": "string"}}}}}}
    return {"Record": record, "PredictRequest": request, "PredictResponse": response, "Error": error}


def example_record(schema: dict, most: Optional[int] = None) -> dict:
    """A record that a bundle of `schema` (its schema.json) accepts: a number feature's typical value (the
    training median it imputes; 1.0 for a bundle written before schema.json had it), a category's most frequent
    one, a placeholder for text and images. `most`: at most that many fields, the required ones first (the
    others are imputed when left out)."""
    def value(f: dict) -> Any:
        kind = _KINDS.get(f["type"], _NUMBER)
        if kind == _CATEGORY:
            return (f.get("categories") or [None])[0]
        typical = f.get("typical", 1.0)
        if isinstance(typical, float) and typical.is_integer():
            typical = int(typical)          # an age of 36, not 36.0 (a median of whole numbers is one mostly)
        return {_IMAGE: "<base64 PNG>", _TEXT: f"<{f['name']}: your text>"}.get(kind, typical)

    def required(f: dict) -> bool:         # as RequestChecker takes them: images, and text unless marked optional
        kind = _KINDS.get(f["type"], _NUMBER)
        return kind == _IMAGE or (kind == _TEXT and f.get("required", True))

    features = sorted(schema["features"], key=lambda f: not required(f))
    return {f["name"]: value(f) for f in features[:most]}
