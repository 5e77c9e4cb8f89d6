"""Where every file of the data root comes from: public GitHub repositories at pinned commits and Hugging Face hub
repositories at pinned revisions, each with the sha256 of the public file (facts, shipped with xlr), and how it is
laid out under the data root (the layout of ``../shared/data``). ``xlr data fetch`` (:mod:`xlr.fetch`) reads this.
"""

from __future__ import annotations

import gzip
import hashlib
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Source:
    """One file of the data root and its public origin.

    ``target``: its path under the data root (e.g. ``x-alpacaeval/prompts/en.json``); ``group``: what ``xlr data fetch
    --only`` selects (x-alpacaeval, ultrafeedback-prompts, english-preferences, alpaca-eval, language-confusion);
    ``kind``: "github" (``repo`` owner/name, ``revision`` a full 40-hex commit, ``path`` in the repository, fetched as
    ``<github base>/<repo>/<revision>/<path>``) or "hub" (``repo`` a repo id, ``repo_type``, ``revision``, ``path`` the
    filename; fetched with huggingface_hub, so ``HF_ENDPOINT`` and its cache apply); ``sha256``: of the public file
    as downloaded; ``transform``: "none" (written as downloaded), "gzip" (written gzip-compressed, as the shared copy
    stores it) or "zip-member:<member>" (extracted from the downloaded zip archive); ``target_sha256``: for a zip member,
    the member's sha256 (checked after extraction), else None."""

    target: str
    group: str
    kind: str
    repo: str
    revision: str
    path: str
    sha256: str
    transform: str = "none"
    target_sha256: str | None = None
    repo_type: str = "dataset"


ICR = "ZNLP/Implicit-Cross-Lingual-Rewarding"
ALPACA_EVAL = "tatsu-lab/alpaca_eval"
LCB = "for-ai/language-confusion"
UF_PAIRS = "kkminions888-ops/ultrafeedback-dpo-noise-study"
EASYRLHF = "DaehanKim/EasyRLHF"
HH_RLHF = "anthropics/hh-rlhf"
REVISIONS = {
    ICR: "168a4207912c562de2f72c7c08ff12156beb2815",
    ALPACA_EVAL: "cd543a149df89434d8a54582c0151c0b945c3d20",
    LCB: "0cfdbb4a64502648938c456b2fa9689968f22298",
    UF_PAIRS: "859ef0a82f3a27f71cef9136a432f19945f704de",
    EASYRLHF: "45eccb72ddb8c18aa52dc2a184516380e06582fe",
    HH_RLHF: "354e5c3cb8960630860dd5774a6ac2a58313bf4d",
}
GROUPS = ("x-alpacaeval", "ultrafeedback-prompts", "english-preferences", "alpaca-eval", "language-confusion")
# The random_{n} subset each training-prompt file is (shared/data/README.md). The tree at 168a420 also names random_5000
# files for de/es/fr/ru/bn/th and random_3000 ones for bn/th; the shared copy does not use them.
TRAIN_SUBSET = {"en": 5000, "sw": 5000, "zh": 5000, "de": 3000, "es": 3000, "fr": 3000, "ru": 3000, "bn": 1000, "th": 1000}
LCB_ZIP, LCB_ZIP_SHA256 = "test_sets.zip", "3425337489fa65ff15d977e981e9748c86ce8e88ef0f4457ecdb4a65d8702712"

# Files of the data root with no public file to fetch (so no Source): target -> why, and where a copy is had.
NOT_FETCHABLE = {
    "x-alpacaeval/paper-table2.csv": (
        f"cannot be fetched: the paper's Table 2, transcribed by hand from the image assets/x-alpacaeval.png of {ICR} "
        f"@{REVISIONS[ICR][:7]}; no public file holds these numbers as text. Copy x-alpacaeval/paper-table2.csv from a checkout's "
        "../shared/data; only the comparison with the paper's numbers needs it"
    ),
}


def _origin(target: str) -> tuple[str, str, str]:
    """(repo, path in it, transform) of a target, by the layout of ``../shared/data/README.md``."""
    parts = target.split("/")
    name = parts[-1]
    if target.startswith("x-alpacaeval/prompts/"):
        return ICR, f"data/x-alpacaeval/data/{name}", "none"
    if target.startswith(("x-alpacaeval/references/", "x-alpacaeval/outputs/")):  # <kind>/<generator>/<lang>.json
        return ICR, f"results/base_model/x-alpacaeval_format/{name.removesuffix('.json')}/{parts[2]}/model_outputs.json", "none"
    if target.startswith("ultrafeedback-prompts/"):
        lang = name.removesuffix(".jsonl")
        return ICR, f"data/ultrafeedback_binarized/subset/random_{TRAIN_SUBSET[lang]}/{lang}.jsonl", "none"
    if target.startswith("english-preferences/ultrafeedback/"):
        return UF_PAIRS, f"data/processed/{name.removesuffix('.jsonl')}_clean.jsonl", "none"
    if target == "english-preferences/hh-rlhf/helpful-base_test.jsonl.gz":
        # anthropics/hh-rlhf stores this file as a Git LFS pointer (raw.githubusercontent serves the 131-byte pointer);
        # EasyRLHF's copy is a plain blob whose sha256 is the pointer's oid.
        return EASYRLHF, "data/helpful-base/test.jsonl.gz", "none"
    if target == "english-preferences/hh-rlhf/harmless-base_test.jsonl.gz":
        return HH_RLHF, "harmless-base/test.jsonl.gz", "none"  # a plain blob at this commit (not an LFS pointer)
    if target == "alpaca-eval/LICENSE":
        return ALPACA_EVAL, "LICENSE", "none"
    if target == "alpaca-eval/leaderboard.csv":
        return ALPACA_EVAL, "src/alpaca_eval/leaderboards/data_AlpacaEval_2/weighted_alpaca_eval_gpt4_turbo_leaderboard.csv", "none"
    if target.startswith("alpaca-eval/annotations/"):
        return ALPACA_EVAL, f"results/{name.removesuffix('.json.gz')}/weighted_alpaca_eval_gpt4_turbo/annotations.json", "gzip"
    if target in ("language-confusion/LICENSE", "language-confusion/words"):
        return LCB, name, "none"
    if target.startswith("language-confusion/outputs/"):
        return LCB, f"outputs/{name.removesuffix('.gz')}", "gzip"
    if target.startswith("language-confusion/test_sets/"):
        return LCB, LCB_ZIP, "zip-member:" + target.removeprefix("language-confusion/")
    raise ValueError(f"xlr/data_sources.py: no origin rule for target {target!r}. Fix: add one to _origin.")


def _source(target: str, digest: str) -> Source:
    repo, path, transform = _origin(target)
    member = transform.startswith("zip-member:")
    return Source(
        target=target,
        group=target.split("/")[0],
        kind="github",
        repo=repo,
        revision=REVISIONS[repo],
        path=path,
        sha256=LCB_ZIP_SHA256 if member else digest,
        transform=transform,
        target_sha256=digest if member else None,
    )


def sources(group: str | None = None) -> tuple[Source, ...]:
    """The Sources of one group (all when ``None``); an unknown group is an error listing the groups."""
    if group is None:
        return SOURCES
    if group not in GROUPS:
        raise ValueError(f"data group {group!r} unknown. Fix: use one of {', '.join(GROUPS)}.")
    return tuple(s for s in SOURCES if s.group == group)


def content_sha256(path: str | Path, source: Source) -> str:
    """The sha256 of a target file that the table states (``source.target_sha256 or source.sha256``): of its decompressed
    content for transform "gzip" (gzip output differs between compressors; the public file does not), else of the file."""
    h = hashlib.sha256()
    with (gzip.open if source.transform == "gzip" else open)(path, "rb") as f:
        while block := f.read(1 << 24):
            h.update(block)
    return h.hexdigest()


# sha256 of each public file (gzip targets: of the file before compression; zip members: of the member), checked against
# the git objects at the pinned commits and against ../shared/data (tests/test_data_sources.py).
_SHA256 = """
6e175e9dbe26bb42de8367bf2215301a71b3f403243a2eefc56378b307638be8  alpaca-eval/LICENSE
72945b6a549eadcd18940fee835343d62985fced144e5b7a2b69c79e120d3cab  alpaca-eval/annotations/FuseChat-Gemma-2-9B-Instruct.json.gz
40023f8b82d9f0bb30fb937c3dd01d99333e813f964d9d8a64d23d0eeceb6c5f  alpaca-eval/annotations/FuseChat-Llama-3.2-1B-Instruct.json.gz
32d4b6912694012c82c1b822792a3fc9e492119a48d93a10c3fbf2990b3a40ae  alpaca-eval/annotations/FuseChat-Llama-3.2-3B-Instruct.json.gz
c816628e6973dc86ed95e6f6a50fdc09fbc4fcb970ee39140138e652cbf2a505  alpaca-eval/annotations/FuseChat-Qwen-2.5-7B-Instruct.json.gz
5f0d215b9a5796ad666dfce980ab4f8db38efa68b766b114f5d44cf85ce25315  alpaca-eval/annotations/Mixtral-8x7B-Instruct-v0.1_concise.json.gz
d8e6d6d8ad735b57149fe0d9cb307e095cdc8befee5f0a849e00d66912500be3  alpaca-eval/annotations/NullModel.json.gz
196f38b5f7fb3c3242635cc4a8175f2c7b39d5648979f086ec7ba93c99e190ff  alpaca-eval/annotations/OpenHermes-2.5-Mistral-7B.json.gz
41047c654c6c5ddc0290fb207367e3f458d22692045eb41927eb64103a2cb764  alpaca-eval/annotations/alpaca-7b.json.gz
afa1dcc9daa47b9df7f50b2c09f489289008da0961f51e946f623e0a338947b0  alpaca-eval/annotations/alpaca-7b_concise.json.gz
e810c1b2388dba56d0786af540f062e974e8a10903ea6ffc728b20f5e0b68f2e  alpaca-eval/annotations/alpaca-farm-ppo-human.json.gz
cd49f09d503c28e37997da67d3bd04c9a6863056ac310ed2dcfaca73ca057715  alpaca-eval/annotations/alpaca-farm-ppo-sim-gpt4-20k.json.gz
c3de44752ec85d4006b3abd878145076e2f601fb03b9685ccc57901a5dcb148c  alpaca-eval/annotations/baize-v2-13b.json.gz
8d3115ed7f777d407f7c1406fdc924a9ca2b58a9b563b4a1b3ed838f07eb0665  alpaca-eval/annotations/chatglm2-6b.json.gz
8dfc94501f8b783d96facd9158e0333dc83c30112c5c1927838fdcc2ee00d213  alpaca-eval/annotations/claude-2.1.json.gz
3bcf3a505c224671226fa793b9c1282627e39b2441d1c2edd712472458974a73  alpaca-eval/annotations/claude-2.1_concise.json.gz
d1e37abd139b989524f2474129eaffc5ca18b050c1a6d9a874a7f1683ee5a50b  alpaca-eval/annotations/claude-instant-1.2.json.gz
2c734d2e0a9c0c520fbc300b7d3c7048f77776cc8b5e37f6b2b7ae9a3cfc3bbb  alpaca-eval/annotations/claude.json.gz
177afc64ebb05efe334c74eebea68a658b30f70667b55f7122da2f8416058762  alpaca-eval/annotations/falcon-40b-instruct.json.gz
b15d77fa3fa266fb74058c4f9d42a5856dcc07431b2dcea528867306002207fe  alpaca-eval/annotations/falcon-7b-instruct.json.gz
d1237f2a044874650a93edb41ebab5983019e988fc0ba229051bc390b598a604  alpaca-eval/annotations/gemma-2b-it.json.gz
dfd85130894e07d8e1443714cfa5bc3376699526472119549d20af2f48ff7cc5  alpaca-eval/annotations/gpt-3.5-turbo-0301.json.gz
4558bed562144780dfcdd5ff55cafc17d76eea62eca143cfcc7ac5f3c154de10  alpaca-eval/annotations/gpt-3.5-turbo-1106.json.gz
87f84647d56b37e4e8c40a874ba33752f8e54f37ffcdfaab366775d84bf1adde  alpaca-eval/annotations/gpt-3.5-turbo-1106_concise.json.gz
7d04918cdcdfee001cb27255fe52acf7cc1d6b2afde651d129b87d0707c99d8a  alpaca-eval/annotations/gpt-3.5-turbo-1106_verbose.json.gz
d5ace3c2c30946f79b6360b80f8f2fdf78a2e0fabcff8142695bd7929f9bb353  alpaca-eval/annotations/gpt35_turbo_instruct.json.gz
91780cf1f3f2e78658aa369a5f65bc07660b9025e38f549fc787ed41f1c3c332  alpaca-eval/annotations/gpt4_0613_concise.json.gz
2a05177cffbab8fa409adf7ee1f0f90414cab169afe391b861489a5734c79363  alpaca-eval/annotations/gpt4_1106_preview.json.gz
3f70f086d97cf7f1c9b1b2ad16a2ac189a95e75a08c9374780e174a1f11dbf02  alpaca-eval/annotations/gpt4_gamed.json.gz
881c16cefd18f3fded2cd39d3ed0fe5678bf326c6cdd61f81b213a4830a56da2  alpaca-eval/annotations/humpback-llama2-70b.json.gz
4daf25a6c419f45d99a0c24e5e06c49f34c905e2bf5150123ea61018dcfd58fb  alpaca-eval/annotations/jina-chat.json.gz
3757513039ff073c6c5b15220f860cc22d2e5e507205c241cb642d0ccd958150  alpaca-eval/annotations/minotaur-13b.json.gz
4e2407e06bbd7dd3d788aeed3095d8152b0a11f27baa45e92265d4b4016fc24f  alpaca-eval/annotations/nous-hermes-13b.json.gz
9b3bbcb1887c292f11f13b0104270ab2d0c3a232ab57bc6963f1d15a21bb0c3e  alpaca-eval/annotations/oasst-rlhf-llama-33b.json.gz
0fc455eb4653793c0f5a8c9769d09e4917ccb7e757bc572e1dcc364795b69cb6  alpaca-eval/annotations/oasst-sft-llama-33b.json.gz
c24f59bada59ac5d7beec9e3a580d969551da6286824a3bb8561ad037651c245  alpaca-eval/annotations/oasst-sft-pythia-12b.json.gz
bf54a50fe4cae4e5aff9386558238873ec5c0196fbdbfb00b8cf097c6b340f50  alpaca-eval/annotations/openbuddy-falcon-40b-v9.json.gz
4ebac3a8b273f949670d91bcf7460ad6f144a5f920e226e0449a113dcf6cb2c4  alpaca-eval/annotations/openbuddy-llama-30b-v7.1.json.gz
a0d4a2822ed34ec7421b40686264e2cef10879c45203f77640c21ca1390aa07e  alpaca-eval/annotations/openbuddy-llama2-13b-v11.1.json.gz
94ed909579527e9048ba8edc9290185f9d88fce8db79a777932378ba24fe3f2d  alpaca-eval/annotations/openbuddy-llama2-70b-v10.1.json.gz
0d54686115010ee168d34af611f0bcc659c03fdf9549923ff26cdcf0272863ae  alpaca-eval/annotations/phi-2-sft.json.gz
b333fac4466be5318d8049b2b9ae71c377075e75c00bc83d13edf8dfca5aa5ad  alpaca-eval/annotations/phi-2.json.gz
8a0ae0eac2927e7f48604e338e89f53ef93d50598f669dd9c28cd41f404bff74  alpaca-eval/annotations/pythia-12b-mix-sft.json.gz
8f0d04e5d31cca5aebe37d876fb798a6cf4b96fef655213c1fda03f8b4791130  alpaca-eval/annotations/text_davinci_001.json.gz
ee0f02243b76628d54ac64bd5310183874ca7c72548d5381bf2b35018ad58027  alpaca-eval/annotations/text_davinci_003.json.gz
ba88ad8119d5bd9746f52392f003604b20cb1b1339a8d75e242371ea79dec63f  alpaca-eval/annotations/ultralm-13b.json.gz
704f200bc6eaa9cdfb85286a41f040c3ab04ae6884c6fe74bc08162525b82550  alpaca-eval/annotations/vicuna-13b-v1.5-togetherai.json.gz
3c9f7d06313e09ad25b105c94abce82f5d6316699d23867f401d8408dda284da  alpaca-eval/annotations/vicuna-13b-v1.5.json.gz
3bd08c0e1cee0f649d95a6986ca275f9281448a2237afed941133b7957212ef8  alpaca-eval/annotations/vicuna-13b.json.gz
6724900d69515c0559415e797dd4ca3854ad9276699c85398785bf6495c74ac9  alpaca-eval/annotations/vicuna-7b-v1.3.json.gz
95d713d4f6c7f9afecd3a1de089336aca2e99addb954ff48a653e0c65ccfa376  alpaca-eval/annotations/vicuna-7b-v1.5.json.gz
86387fd674fc860d352750ff022c4d3b12daaf2fc51f0c70e62da81205f0a4f4  alpaca-eval/annotations/vicuna-7b.json.gz
65d7514e6bdcbf3babca6d5ffe4b9993fb93e0e5e95040be19c19e12fdf32422  alpaca-eval/annotations/wizardlm-13b.json.gz
fe32bf85c2f7429038faa4c9a884d1d131726454ff84a4b810a91c1c7a2aa0e9  alpaca-eval/leaderboard.csv
ebfaaed21162a4de120ae85366075b34425e2a6303fac59b99555002f7016f03  english-preferences/hh-rlhf/harmless-base_test.jsonl.gz
8be3fc1a13b27901631696f2be6f184c799f1baeaf145f53ac5db24960adc37b  english-preferences/hh-rlhf/helpful-base_test.jsonl.gz
932ea766ae90386f0a6c0c764162d28321c3ebfd7cd4c534aa5c0589bc9c2e0c  english-preferences/ultrafeedback/eval.jsonl
136b0163cbca47cc562ce260e4be38745f638563bce2930771da8cd8c9791c8e  english-preferences/ultrafeedback/train.jsonl
c71d239df91726fc519c6eb72d318ec65820627232b2f796219e87dcf35d0ab4  language-confusion/LICENSE
22de6ed1904056cb72ea8a8f0fe50738d8251d2bf63aad2fba7fdeb0b6815058  language-confusion/outputs/command-r.csv.gz
d8278405652c8b197fda43c9d94bda823084ae62882ac441ecc95ff044ec5424  language-confusion/outputs/gpt-3.5-turbo.csv.gz
14cf6be569ebce1db2ed853b4c745ea7bd1ca345907fbc8a3b743315ddd7ffbd  language-confusion/outputs/llama-2-instruct.csv.gz
79bebb3235b1cd5db4c7ec98735ff7f842bb0e6d8de02647dc72b702acc8e700  language-confusion/outputs/llama-3-instruct.csv.gz
119d92fee1f5893d3a7324119805f09e66b67a48c9684361d1b564566865adb3  language-confusion/test_sets/crosslingual/complex_prompts/ar.csv
b04911a51908d88c65cff9c26a5cc93c88e7630b469226a94f125e98bd19d480  language-confusion/test_sets/crosslingual/complex_prompts/de.csv
ac6030235b3a69fe90454438dfbb4fa0a7fdffb607ac144143518f9354b99324  language-confusion/test_sets/crosslingual/complex_prompts/es.csv
c2c96d749c707db745d99044e9cb668b95a386fa1522fbbb6ef949fd4aceae4d  language-confusion/test_sets/crosslingual/complex_prompts/fr.csv
ceeb1fafd6fd88b02a7045015da57757d0f5ee5c3a50974a987d4f0260bfce35  language-confusion/test_sets/crosslingual/complex_prompts/hi.csv
23f0722346e9efe7685b8ab0e906bbd2822af77cdb766ab13dca94cbe2482341  language-confusion/test_sets/crosslingual/complex_prompts/id.csv
049efa09b298213bfa5432af3f39d6741d32cfcdb12959b6c20f88c6e54cc805  language-confusion/test_sets/crosslingual/complex_prompts/it.csv
76062725c76d96f49c1c12447845c22ec17d5f502611958752c03c408902ec9d  language-confusion/test_sets/crosslingual/complex_prompts/ja.csv
0858e52cc95ed633640142baf3c18b160e0965ca21aba32d15bfcc65bf5747ae  language-confusion/test_sets/crosslingual/complex_prompts/ko.csv
e8734f1401bdd6eaa55a2b787fe216ec753662b5efe5a0956cc01eed2ed87384  language-confusion/test_sets/crosslingual/complex_prompts/pt.csv
f4634a6be569757d2836512754a307a32e2a36fd206cf4d5df0012083795ed6a  language-confusion/test_sets/crosslingual/complex_prompts/ru.csv
db5d106b4031bed7679cce0d82d968d05461bf8e518ea64d7a52247a250d30d0  language-confusion/test_sets/crosslingual/complex_prompts/tr.csv
26872c57e9cd100eb0b58e2922306181b944662dff468fe45de01aabc8ab94d8  language-confusion/test_sets/crosslingual/complex_prompts/vi.csv
4c800b6d97dd6a8b7879c6dad4b3e7c3bc0da7a2ed651e97d4056a1e4a65a54d  language-confusion/test_sets/crosslingual/complex_prompts/zh.csv
a3b1766685b925021c79f19c2cfcf3cc2c3c0ce66da3b51ace11f13ad265e42f  language-confusion/test_sets/crosslingual/okapi/ar.csv
4ab2dbba7eb6763203c76b9e66855d03e4f426a03a17cd99c314a388c0aea897  language-confusion/test_sets/crosslingual/okapi/de.csv
2e5097a1352aa0562b129b787d9d2d6a4446f0aad10e0c4734095c6d8eebb440  language-confusion/test_sets/crosslingual/okapi/es.csv
42da0ef9a1acb24cadb1b77fa1f79cae6e8a33f70ef1f4994bd7d0542539d50a  language-confusion/test_sets/crosslingual/okapi/fr.csv
5805e0dec83f6508e0facf888ffa6fbf98a564d0f01663c9ee2c1dc1de61498f  language-confusion/test_sets/crosslingual/okapi/hi.csv
15ca68bfaa0b360525c47ff1acf274de8284808cb0c7a86e4e475cca31f1c805  language-confusion/test_sets/crosslingual/okapi/id.csv
59d69d4f44f570ab5bda6b96ca6faa911ea8a5c66447bd38ecd04515abfd6b53  language-confusion/test_sets/crosslingual/okapi/it.csv
a70d9ccbc59d5046e9f4c4f70251fe2ed54281f10d29f9675a636e50c56a46ff  language-confusion/test_sets/crosslingual/okapi/ja.csv
0367046df4bf7b4c4133a1ed58f38c1a05220accdd077634d719163b97433ebd  language-confusion/test_sets/crosslingual/okapi/ko.csv
63db35915bebfeb6580a464503265e64616a68ecda2ecc28fb381e74bd75b4d3  language-confusion/test_sets/crosslingual/okapi/pt.csv
60426ab581d3c8af7cb9095ca4c96204c608221f5fc341893108347da0aff53b  language-confusion/test_sets/crosslingual/okapi/ru.csv
63dca56b2c44a39feff875c774be0f7b3b1b89209d57486a391ac549e32e4ade  language-confusion/test_sets/crosslingual/okapi/tr.csv
4ad201f718fddb6592ec1680e1a894f707f9b49fb9dc39a12972e38b1b7c4602  language-confusion/test_sets/crosslingual/okapi/vi.csv
b94ad4fae250b4992917945750bcb1cd019b3a8fac8253450299a763fe0b6aff  language-confusion/test_sets/crosslingual/okapi/zh.csv
774fae9dcf771b4e5b3169d5cf42789f4f85c80a3e7bb95c478e5a7fb352529d  language-confusion/test_sets/crosslingual/sharegpt/ar.csv
09dcb860021d897fc0c27fb0ac1cd5d4fafce6eeb18275e31ade23d6be4f08a7  language-confusion/test_sets/crosslingual/sharegpt/de.csv
d998b2c1a36efdc319b3c8ecb21013aa91d0befc89eba9ec114403c9272a37dd  language-confusion/test_sets/crosslingual/sharegpt/es.csv
772c48e59ad267dff9a0a258a9ddcbaa4de909a82bfe28a2b0bfbd6de606195f  language-confusion/test_sets/crosslingual/sharegpt/fr.csv
c05ced23d43e754e74615fcdc5cc91dcdb6470fe7029265071c155fa0605c233  language-confusion/test_sets/crosslingual/sharegpt/hi.csv
187f7a4e09e4e888c5616af493e0fd304e6a2a1c6a87b13dd393416ccb5e2a96  language-confusion/test_sets/crosslingual/sharegpt/id.csv
fc2c7b1bcc833b949a3a3237c7cca84cb026a0d7c665cd37d088556d9972b62c  language-confusion/test_sets/crosslingual/sharegpt/it.csv
ed81ea8502d79d3e7701345bde90d753144af6f69771e5183ea222ac12402548  language-confusion/test_sets/crosslingual/sharegpt/ja.csv
25355fb45c6476a4a8ba1ef3b8128d2d89ec828e83ce3763b2270768d462848e  language-confusion/test_sets/crosslingual/sharegpt/ko.csv
a7160b213ae5b8eadedfb31ae8593a8e69769b5c4517be4cbaa0866318cc8cc1  language-confusion/test_sets/crosslingual/sharegpt/pt.csv
adeeb4265015da9c22f29a681677021f120a8dad2f46618cb88e2bbf4aa0eebf  language-confusion/test_sets/crosslingual/sharegpt/ru.csv
026243611a7649762babbffd9adab54b4c391426677abb9dadf8449d22d55414  language-confusion/test_sets/crosslingual/sharegpt/tr.csv
e501d73c5fc820dd63077d9f21f1d9e2791ba5b66bbc4100713295ef5d26f2c5  language-confusion/test_sets/crosslingual/sharegpt/vi.csv
95ba63257d4ceef79dbcf82879610cf4d26bb097816c3d1244d5ec5246e6021e  language-confusion/test_sets/crosslingual/sharegpt/zh.csv
f5ba0f209cbef6e5d6fedaed82671ecd81d7aed6b16b85fc37013e985a7c9316  language-confusion/test_sets/monolingual/aya/ar.csv
804582ef5a34c5b2ee6e63262f398c96775c10512342b6b287751c16e7c93334  language-confusion/test_sets/monolingual/aya/en.csv
8750fad50c9ff5847d43caf75a12e7a7730d76c4c8ec896b079bd40fe31d44f8  language-confusion/test_sets/monolingual/aya/pt.csv
a1da1078df7f215e9807a3c37bde4ef709e98ceaa119d950bab3bb2c290dab5a  language-confusion/test_sets/monolingual/aya/tr.csv
aa95a739f905d878d11bd0aff8b4ea90dfcfb9e75f3446dca1e24157d6023382  language-confusion/test_sets/monolingual/aya/zh.csv
580f954caf304fea60f5264d5ed2d9cc144b8b848a72ca6686854341a74e1b51  language-confusion/test_sets/monolingual/dolly/ar.csv
4c7862ba32abd7d1689687ef0f36a151279baedcb496955733c405bcb4a69392  language-confusion/test_sets/monolingual/dolly/es.csv
219ccc1cf163c4f81d1394691aa5358856f8c3f33006fe21479cfdb9b191c225  language-confusion/test_sets/monolingual/dolly/fr.csv
4d752aca6d867f3dad9695f0e8d3c2f995b766d51cfd94a9c56247f471e6e8e7  language-confusion/test_sets/monolingual/dolly/hi.csv
b0c5d7ae8447bf553c8f33f0251b86e8a2196a0643795d36d025205ae54dd9a7  language-confusion/test_sets/monolingual/dolly/ru.csv
c037df11b43e1b06e7437b3cc84a85be9ffb995dd68612030f22e9b3cba7c8b8  language-confusion/test_sets/monolingual/native/es.csv
80943d8ad7a5077ec1e0b1f674fbddac2279bed068d89590287ac7360611160f  language-confusion/test_sets/monolingual/native/fr.csv
0aa69d83a00f990017a1147c9ca6afeba946ea13732a110dbf667b21064b2065  language-confusion/test_sets/monolingual/native/ja.csv
e628fd6d0cb22b6175ba026d1bd3e512c41ca48840329b591569e6121e487cfe  language-confusion/test_sets/monolingual/native/ko.csv
5abebd64939d8d90318b51b13203bc816ac1abeebdc17269aca98b8e372dd780  language-confusion/test_sets/monolingual/okapi/ar.csv
37549f90ec40fe31b79944c3abb24baaed3a740fc8c7362ea968db6b0e1ec831  language-confusion/test_sets/monolingual/okapi/de.csv
3db68a1300edeb5afb977e65e8bcfa4c89989900c8ffc698bd8e489058fca1a5  language-confusion/test_sets/monolingual/okapi/en.csv
4d8d34355f49d5ac4185c0034d4099c1ff7418d6af835f3b1515379c16877ea6  language-confusion/test_sets/monolingual/okapi/es.csv
8d6a01e19ebf96fa83542dbd7b93f308a2ec3377fd7e6e47cf2c9d11def1f075  language-confusion/test_sets/monolingual/okapi/fr.csv
deba2e2519b3dea8f87e5f27097e01f03084e86eb2cd677cabb376229228ce8f  language-confusion/test_sets/monolingual/okapi/id.csv
28c83bd10d8280a327266d0b27e6920320b36a1dfd60742b08dad3305ae71d8a  language-confusion/test_sets/monolingual/okapi/it.csv
f3b80adad277a7961eeac4fcb732c8917afffb9f5940ebea9ec472797e89751b  language-confusion/test_sets/monolingual/okapi/pt.csv
33108fc9925658cd8145e7f6cddb4afb33b1c562e6b90fdcdddeddc1c7e7a76b  language-confusion/test_sets/monolingual/okapi/vi.csv
82bf917a77d2f8132c0f73db9688d625718d63e7f0f0cab516eccb08a85d2c4f  language-confusion/test_sets/monolingual/okapi/zh.csv
1ec8230beef2a7c955742b089fc3cea2833866cf5482bf018d7c4124eef104bd  language-confusion/words
0156ff1e5fbf0c53dbeab5f5ea077667c212eb256a6bbbb5afe0113d98f556b4  ultrafeedback-prompts/bn.jsonl
0fc4ebcbd0b87fea482e27ef714035d4387ec1ffb1ed173fecd028a2ba92088d  ultrafeedback-prompts/de.jsonl
0f8bc8529c4adf32593f94e64a3fbc187b925f873842c5d96e9f888b3a56c89b  ultrafeedback-prompts/en.jsonl
fd5b7cb1c96823f6edcace979f7f8d1723ecbc07841763d590f2aae656b22ba4  ultrafeedback-prompts/es.jsonl
0f2881a1daf0a83418f9d406eb6aabc614acbab82ea5beb6c507948772637366  ultrafeedback-prompts/fr.jsonl
0277eb475fce8ac0e4ac31caf3e29892c7b02348ae3b1b7713d6e8381d45567d  ultrafeedback-prompts/ru.jsonl
7dc46320489899e00c9ff0ab8f85a86657c88a8d1ab09cfb4ccc8a6d701370cf  ultrafeedback-prompts/sw.jsonl
eb54bdf17776ffbc51d6bdf4fefccb663d3f03bd8e14c5081b0ed1ba8e0a3fba  ultrafeedback-prompts/th.jsonl
36a0b73b184e8bf1481457e35df16fb4b3044cb12efeefee7e4403ea443e9beb  ultrafeedback-prompts/zh.jsonl
9df2c4b7323498bcb4c61e06916c9629ba4ce8716742653eba136fb5ee2bddfa  x-alpacaeval/outputs/gpt-3.5-turbo-0125/de.json
fe89ad6b7fb7e3847c038a12c6c303111d6e67df00772c388ac5f1992380dc67  x-alpacaeval/outputs/gpt-3.5-turbo-0125/en.json
3bced4d32c480065fed38152bc59d98b7fdd45b3e4d3604529ea64c929779065  x-alpacaeval/outputs/gpt-3.5-turbo-0125/es.json
40dffa95841ba9adfd45edeb9ce64955968f121427ef3379a4be5229d8cb756a  x-alpacaeval/outputs/gpt-3.5-turbo-0125/fr.json
22f4ba2aba4f7fc6dae6fe3b52578e68cf78f352247dd9a9fef74477e70b8a40  x-alpacaeval/outputs/gpt-3.5-turbo-0125/ru.json
fd0c362c47736eb3083aea2ecfaadad7785623025470e54a80bab6c9a39f7a7a  x-alpacaeval/outputs/gpt-4-0613/de.json
1fb5bea9bb5d728e645a7713b82df2d0ee6b49d1c0432f0cfd3a46320975d087  x-alpacaeval/outputs/gpt-4-0613/en.json
c0a4ecfc9d866e75ade0a4bbf99820b256e1aa312fdb25511aa08c41e7531b32  x-alpacaeval/outputs/gpt-4-0613/es.json
5ddf5c52fafef21f7a21616025ef311bd6d544829a4c28600e85fb343bdb88ae  x-alpacaeval/outputs/gpt-4-0613/fr.json
6afd816b2d8a075916d8f65c8e147fc4e9084a69c1510a61f7026004b0930bdb  x-alpacaeval/outputs/gpt-4-0613/ru.json
d535d4249360d3075365d7fa3ac0a00015b23bdce2ee183ef8cda2453feff4ca  x-alpacaeval/outputs/gpt-4o-mini/de.json
36e04e4de54753406708a694770417e6d957735ec8914751129faa4f54944357  x-alpacaeval/outputs/gpt-4o-mini/en.json
6d98ffc056e0112a3dabb598bd3ff824725ef488a78f39639cde13a371b6b579  x-alpacaeval/outputs/gpt-4o-mini/es.json
9847b9d00a9d37a61f46b8cabb2d97905fe66cda68995f4d4699067eeed6b87b  x-alpacaeval/outputs/gpt-4o-mini/fr.json
8a406df8fb13e165fbd2be159dc60977620345a03b6c5eb170d46e02955daca8  x-alpacaeval/outputs/gpt-4o-mini/ru.json
1303ae24ca773a480b2ec20eeb6c56f85e43b6673126f8699aad477ee75ff32f  x-alpacaeval/prompts/bn.json
8ab58ecef8bca2592d5d42d2edfbf11e7bcee362131345ba43ced91b150c6433  x-alpacaeval/prompts/de.json
fffadba388d6bb9e7f83107972e88b0fcf0c040a35bbbcba4ff2b5124edf566a  x-alpacaeval/prompts/en.json
7db6af437b3c35f507f5b2d51d9b1583b4a65ea5ea135b91839cf47b09125c6d  x-alpacaeval/prompts/es.json
003f2ac23d4a467e1cf480cc872ecf01fb2e4b81bc5556a99cf13414c7d58209  x-alpacaeval/prompts/fr.json
a54734c76c8fca3a773369c2b665d5318b476127ebb6518d687d20b39e5c28ac  x-alpacaeval/prompts/ru.json
3f3d2ecd6fdcbf31be068e5801b09f14d815a8fcea6ae6bfe3992bf46d9e188a  x-alpacaeval/prompts/sw.json
9d118f72fb8ff94661f9a942b4757e6deaa94297bdeae83824ba61aee8c0dfa5  x-alpacaeval/prompts/th.json
da5a4029d7be28608bb573fbaea78ea44116b84752ec85475d74de3b9412962a  x-alpacaeval/prompts/zh.json
7a18ecda2b1d917c2a068651df4356e3a9a0d3b5692e539046e89127affd6c9f  x-alpacaeval/references/gpt-4-turbo-2024-04-09/bn.json
3bd89a7be3d4dbf236d5c7df7ab03eea7e97d30cce4c50b32e3942be4d30d369  x-alpacaeval/references/gpt-4-turbo-2024-04-09/de.json
ff7530b69972e0e77d409debfcb453c805ba4dae713e496f0aac371c154ca77b  x-alpacaeval/references/gpt-4-turbo-2024-04-09/en.json
8f11bb9b2da7747be2c4b16249d198fa82b415790563bb2973fc39340c4ae077  x-alpacaeval/references/gpt-4-turbo-2024-04-09/es.json
a59874159af5aa17c0b313b94ebe1a04092b6b717e0d467c7740b56adf1c9bf3  x-alpacaeval/references/gpt-4-turbo-2024-04-09/fr.json
0529f11d3ddb1c33e2580d4bba7219a621b71bd80c1a5904bd06e691de7d5480  x-alpacaeval/references/gpt-4-turbo-2024-04-09/ru.json
38404871e246c2582ccee989a0ca7407f43cb2648a78af9ca26b9a3a99625877  x-alpacaeval/references/gpt-4-turbo-2024-04-09/sw.json
6ceeb881de8a185b60e02420ea4df2149ee15592f8f5a9c98e0acb803b0dad83  x-alpacaeval/references/gpt-4-turbo-2024-04-09/th.json
faed4d9cc055bafadc3e1f84cb10d009f3fa3bf3b7c14cff4d1120f75231ad77  x-alpacaeval/references/gpt-4-turbo-2024-04-09/zh.json
"""

SOURCES: tuple[Source, ...] = tuple(_source(t, h) for h, t in (line.split() for line in _SHA256.strip().splitlines()))
