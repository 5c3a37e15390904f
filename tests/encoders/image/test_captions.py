"""Image-caption recall on cases small enough to rank by hand."""

from __future__ import annotations

import numpy as np
import pytest

from m3search.encoders.image.captions import image_text_recall
from m3search.errors import InvalidInputError


def test_recall_on_a_hand_ranked_case() -> None:
    images = np.eye(3, dtype=np.float32)  # three orthogonal images
    # captions 0,1 belong to image 0; 2,3 to image 1; 4 to image 2
    captions = np.array(
        [
            [1.0, 0.0, 0.0],  # nearest image 0: right (rank 0)
            [0.0, 0.8, 0.6],  # image order 1, 2, 0: right one third (rank 2)
            [0.0, 1.0, 0.0],  # right (rank 0)
            [0.6, 0.0, 0.8],  # image order 2, 0, 1: rank 2
            [0.8, 0.0, 0.6],  # image order 0, 2: rank 1
        ],
        dtype=np.float32,
    )
    owner = np.array([0, 0, 1, 1, 2])
    recall = image_text_recall(images, captions, owner, ks=(1, 2, 3))
    assert recall["text_to_image"] == {"recall@1": 2 / 5, "recall@2": 3 / 5, "recall@3": 1.0}
    # image 0 ranks captions 0 (1.0), 4 (0.8), 3 (0.6): own caption first. Image 1: caption 2 (1.0): first.
    # image 2 ranks 3 (0.8), 1 (0.6) and 4 (0.6): its own caption 4 ties with 1 and comes after caption 3.
    assert recall["image_to_text"] == {"recall@1": 2 / 3, "recall@2": 1.0, "recall@3": 1.0}
    # separate query vectors are used for text->image only: captions 1 and 3 now query with their image's
    # first caption (right at rank 0), caption 4 is unchanged (wrong at rank 0)
    queries = captions[[0, 0, 2, 2, 4]]
    both = image_text_recall(images, captions, owner, query_caption_vectors=queries, ks=(1,))
    assert both["text_to_image"]["recall@1"] == 4 / 5 and both["image_to_text"]["recall@1"] == 2 / 3


def test_shape_errors() -> None:
    with pytest.raises(InvalidInputError, match="one caption vector per caption"):
        image_text_recall(np.eye(2), np.eye(2), np.array([0]))
    with pytest.raises(InvalidInputError, match="2-d, captions 3-d"):
        image_text_recall(np.eye(2), np.eye(3)[:2], np.array([0, 1]))
