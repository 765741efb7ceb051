"""Wire formats: every message's contract, the prediction decoder, output records, timestamps."""
