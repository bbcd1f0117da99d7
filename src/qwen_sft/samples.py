"""Synthetic chat rows for demos, smoke tests and examples.

`generate_samples(n, seed)` builds raw rows (the dicts a user's JSONL would hold) that
`data.formats.parse_row(row, None)` accepts: alpaca rows (instruction / input / output, sometimes a
system prompt or a history of earlier turns) and messages rows (multi-turn, sometimes a system
prompt, sometimes `reasoning_content` on the last assistant turn), in English and Chinese, across
finance, math, coding, writing and general knowledge; and tool-calling messages rows (TOOL_SHARE):
`tools`, assistant `tool_calls` (one, two in a turn, or two steps), `tool` results, and the answer.

Rows are composed from templates and small vocabularies; every number in an answer is computed
from the numbers in the question, so the answers are right for what is asked. The output depends
only on (n, seed): the same seed gives the same rows, and a prefix of a longer run is not
guaranteed (each call starts its own random stream).

`DEMO_PAIRS` / `demo_rows()` are eight short fixed question-answer pairs for the memorization demo.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import random
from dataclasses import dataclass, field

__all__ = ["DEMO_PAIRS", "DOMAINS", "demo_rows", "generate_samples"]

# ---------------------------------------------------------------- demo pairs

DEMO_PAIRS: list[tuple[str, str]] = [
    ("What is the capital of France?", "The capital of France is Paris."),
    ("Who wrote Romeo and Juliet?", "William Shakespeare wrote Romeo and Juliet."),
    ("How many days are in a week?", "There are seven days in a week."),
    ("Which planet is known as the Red Planet?", "Mars is known as the Red Planet."),
    ("中国的首都是哪座城市？", "中国的首都是北京。"),
    ("一年有几个月？", "一年有十二个月。"),
    ("水在多少摄氏度沸腾？", "在标准大气压下，水在一百摄氏度沸腾。"),
    ("熊猫主要吃什么？", "熊猫主要吃竹子。"),
]

# The reasoning of every demo row for thinking models: one short line, the same for all rows, so that the tiny
# demo model learns it at once and spends its few steps on the answers (a per-row reasoning is as much to
# memorize again as the answers themselves).
DEMO_REASONING = "I know this one."


def demo_rows(reasoning: bool = False) -> list[dict]:
    """DEMO_PAIRS as alpaca rows; reasoning: with a one-line think block before each answer (for thinking models)."""
    if not reasoning:
        return [{"instruction": q, "input": "", "output": a} for q, a in DEMO_PAIRS]
    return [{"instruction": q, "input": "", "output": f"<think>\n{DEMO_REASONING}\n</think>\n\n{a}"}
            for q, a in DEMO_PAIRS]


# ---------------------------------------------------------------- helpers


@dataclass
class _Task:
    q: str  # the user's request
    a: str  # the assistant's reply
    ctx: str = ""  # a context paragraph (alpaca `input`), or ""
    reasoning: str | None = None  # step-by-step thinking, usable as reasoning_content
    followups: list = field(default_factory=list)  # [(question, answer)] that continue this exchange


def _num(x: float, nd: int = 2) -> str:
    """1234.5 -> '1,234.5'; whole numbers print without decimals."""
    r = round(x, nd)
    if r == int(r):
        return f"{int(r):,}"
    return f"{r:,.{nd}f}".rstrip("0").rstrip(".")


def _signed(x: int) -> str:
    """'+ 5' or '- 5', for writing expressions like '3x - 5'."""
    return f"+ {x}" if x >= 0 else f"- {-x}"


def _pick(rng: random.Random, en: bool, en_items, zh_items):
    return rng.choice(en_items if en else zh_items)


_ZH_DIGITS = "零一二三四五六七八九十"
_MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
           "November", "December"]  # not strftime('%B'), which follows the locale

# ---------------------------------------------------------------- finance

_CO_EN = [
    "Northwind Traders", "Contoso Retail", "Harborview Foods", "Bluepeak Energy", "Silverline Logistics",
    "Crestmont Bank", "Evergreen Pharma", "Summit Robotics", "Lakeside Apparel", "Ironwood Mining",
    "Brightpath Software", "Redwood Insurance", "Falcon Air Cargo", "Oakridge Semiconductors",
]
_CO_ZH = [
    "华瑞科技", "东海能源", "恒远物流", "金桥银行", "瑞丰食品", "远航电子", "青山医药",
    "鼎盛地产", "星河软件", "长江重工", "明德教育", "嘉禾零售", "天衡保险", "北辰半导体",
]
_METRICS = [
    ("revenue", "营业收入"), ("net income", "净利润"), ("operating income", "营业利润"),
    ("gross profit", "毛利润"), ("operating cash flow", "经营活动现金流"),
]


def _periods(rng, en):
    if rng.random() < 0.5:
        y = rng.randint(2016, 2024)
        return (str(y), str(y + 1)) if en else (f"{y}年", f"{y + 1}年")
    q, y = rng.randint(1, 4), rng.randint(2018, 2024)
    if en:
        return f"Q{q} {y}", f"Q{q} {y + 1}"
    return f"{y}年第{_ZH_DIGITS[q]}季度", f"{y + 1}年第{_ZH_DIGITS[q]}季度"


def fin_growth(rng, en):
    co = _pick(rng, en, _CO_EN, _CO_ZH)
    m_en, m_zh = rng.choice(_METRICS)
    p0, p1 = _periods(rng, en)
    a = rng.randint(80, 9000) / 10
    b = round(a * (1 + rng.uniform(-0.35, 0.6)), 1)
    if b == a:
        b = round(a + 0.1, 1)
    g = (b - a) / a * 100
    d = b - a
    factor = round(1 + g / 100, 4)
    nxt = b * factor
    if en:
        q = rng.choice([
            f"{co}'s {m_en} was ${a:,.1f} million in {p0} and ${b:,.1f} million in {p1}. What was the growth rate?",
            f"Calculate the change in {m_en} for {co}: {p0}: ${a:,.1f} million, {p1}: ${b:,.1f} million. Give it as a percentage.",
            f"If {co} reported {m_en} of ${a:,.1f} million in {p0} and ${b:,.1f} million in {p1}, by what percentage did it change?",
        ])
        verb = "rose" if g > 0 else "fell"
        ans = (f"Growth rate = (new - old) / old × 100%\n= ({b:,.1f} - {a:,.1f}) / {a:,.1f} × 100%\n"
               f"= {d:+,.1f} / {a:,.1f} × 100% ≈ {g:+.2f}%\n\n"
               f"{co}'s {m_en} {verb} by about {abs(g):.2f}% from {p0} to {p1}.")
        reasoning = (f"The change is {b:,.1f} - {a:,.1f} = {d:+,.1f} million. Dividing by the starting value "
                     f"{a:,.1f} gives {g / 100:+.4f}, so the growth rate is about {g:+.2f}%.")
        fq = rng.choice(["If it grows at the same rate next year, what would it be?",
                         "And if that rate holds for one more period, what figure would we expect?"])
        fa = (f"Applying the same {g:+.2f}% change to {b:,.1f}: {b:,.1f} × {factor:.4f} ≈ ${nxt:,.1f} million. "
              "That assumes the rate simply repeats, which is a rough projection, not a forecast.")
    else:
        q = rng.choice([
            f"{co}{p0}的{m_zh}为{a:,.1f}亿元，{p1}为{b:,.1f}亿元，增长率是多少？",
            f"请计算{co}{m_zh}的变化率：{p0}为{a:,.1f}亿元，{p1}为{b:,.1f}亿元。",
            f"某公司（{co}）{m_zh}从{p0}的{a:,.1f}亿元变为{p1}的{b:,.1f}亿元，变化了百分之多少？",
        ])
        verb = "增长" if g > 0 else "下降"
        ans = (f"增长率 = (本期 - 上期) ÷ 上期 × 100%\n= ({b:,.1f} - {a:,.1f}) ÷ {a:,.1f} × 100%\n"
               f"= {d:+,.1f} ÷ {a:,.1f} × 100% ≈ {g:+.2f}%\n\n"
               f"即{co}的{m_zh}从{p0}到{p1}{verb}了约{abs(g):.2f}%。")
        reasoning = (f"变化量是 {b:,.1f} - {a:,.1f} = {d:+,.1f} 亿元，除以基期的 {a:,.1f}，"
                     f"得到 {g / 100:+.4f}，也就是约 {g:+.2f}%。")
        fq = rng.choice(["如果下一期保持同样的增长率，会是多少？", "按这个增速再推一期，大概是多少？"])
        fa = (f"按 {g:+.2f}% 的变化率推算：{b:,.1f} × {factor:.4f} ≈ {nxt:,.1f}亿元。"
              "这只是假设增速不变的简单推算，并不是预测。")
    return _Task(q, ans, reasoning=reasoning, followups=[(fq, fa)])


_MARGINS = [
    ("gross profit", "毛利润", "gross margin", "毛利率", 0.2, 0.7),
    ("operating income", "营业利润", "operating margin", "营业利润率", 0.04, 0.3),
    ("net income", "净利润", "net profit margin", "净利率", 0.02, 0.25),
]


def fin_margin(rng, en):
    co = _pick(rng, en, _CO_EN, _CO_ZH)
    p_en, p_zh, m_en, m_zh, lo, hi = rng.choice(_MARGINS)
    y = rng.randint(2015, 2024)
    r = rng.randint(200, 50000) / 10
    p = round(r * rng.uniform(lo, hi), 1)
    margin = p / r * 100
    if en:
        q = rng.choice([
            f"{co} had revenue of ${r:,.1f} million and {p_en} of ${p:,.1f} million in {y}. What is its {m_en}?",
            f"Revenue: ${r:,.1f}M. {p_en.capitalize()}: ${p:,.1f}M. Compute the {m_en}.",
        ])
        ans = (f"{m_en.capitalize()} = {p_en} / revenue × 100% = {p:,.1f} / {r:,.1f} × 100% ≈ {margin:.2f}%.\n\n"
               f"In other words, about {margin:.0f} cents of every dollar of sales ended up as {p_en}.")
        reasoning = f"{m_en} is {p_en} divided by revenue: {p:,.1f} / {r:,.1f} = {margin / 100:.4f}, about {margin:.2f}%."
    else:
        q = rng.choice([
            f"{co}{y}年营业收入{r:,.1f}亿元，{p_zh}{p:,.1f}亿元，{m_zh}是多少？",
            f"已知营业收入为{r:,.1f}亿元，{p_zh}为{p:,.1f}亿元，请计算{m_zh}。",
        ])
        ans = (f"{m_zh} = {p_zh} ÷ 营业收入 × 100% = {p:,.1f} ÷ {r:,.1f} × 100% ≈ {margin:.2f}%。\n\n"
               f"也就是说，每100元收入中大约有{margin:.0f}元转化为{p_zh}。")
        reasoning = f"{m_zh}等于{p_zh}除以营业收入：{p:,.1f} ÷ {r:,.1f} = {margin / 100:.4f}，约 {margin:.2f}%。"
    return _Task(q, ans, reasoning=reasoning)


def fin_compound(rng, en):
    p = rng.randrange(1000, 100001, 500)
    rate = rng.randrange(150, 801, 25) / 100
    years = rng.randint(2, 30)
    monthly = rng.random() < 0.3
    if monthly:
        amount = p * (1 + rate / 1200) ** (12 * years)
        formula = f"A = P × (1 + r/12)^(12t) = {p:,} × (1 + {rate / 100:g}/12)^{12 * years}"
    else:
        amount = p * (1 + rate / 100) ** years
        formula = f"A = P × (1 + r)^t = {p:,} × (1 + {rate / 100:g})^{years} = {p:,} × {(1 + rate / 100) ** years:.4f}"
    interest = amount - p
    if en:
        how = "monthly" if monthly else "annually"
        q = rng.choice([
            f"If I invest ${p:,} at {rate:g}% annual interest compounded {how}, how much will I have after {years} years?",
            f"What is the future value of ${p:,} after {years} years at {rate:g}% per year, compounded {how}?",
        ])
        ans = (f"{formula} ≈ ${amount:,.2f}\n\nAfter {years} years you would have about ${amount:,.2f}, "
               f"of which ${interest:,.2f} is interest (before taxes and fees).")
        reasoning = (f"Compound interest: principal {p:,}, rate {rate:g}% per year, {years} years, compounded {how}. "
                     f"The growth factor works out to {amount / p:.4f}, so the balance is {amount:,.2f}.")
    else:
        how = "按月" if monthly else "按年"
        q = rng.choice([
            f"本金{p:,}元，年利率{rate:g}%，{how}复利，{years}年后本息合计是多少？",
            f"把{p:,}元存{years}年，年化利率{rate:g}%，{how}计复利，到期能拿到多少钱？",
        ])
        ans = (f"{formula} ≈ {amount:,.2f}元\n\n{years}年后本息合计约{amount:,.2f}元，其中利息约{interest:,.2f}元（未计税费）。")
        reasoning = f"复利公式，本金{p:,}，年利率{rate:g}%，{years}年，{how}复利。增长倍数约为{amount / p:.4f}，所以本息约{amount:,.2f}元。"
    return _Task(q, ans, reasoning=reasoning)


def fin_loan(rng, en):
    if rng.random() < 0.6:
        p, years, kind = rng.randrange(100_000, 2_000_001, 10_000), rng.choice([10, 15, 20, 25, 30]), 0
    else:
        p, years, kind = rng.randrange(5_000, 80_001, 1_000), rng.choice([2, 3, 4, 5]), 1
    rate = rng.randrange(290, 801, 5) / 100
    i, n = rate / 1200, years * 12
    pay = p * i / (1 - (1 + i) ** -n)
    total = pay * n
    if en:
        what = ["mortgage", "car loan"][kind]
        q = rng.choice([
            f"What is the monthly payment on a ${p:,} {what} at {rate:g}% APR over {years} years?",
            f"I'm taking a {years}-year {what} of ${p:,} at {rate:g}% a year. How much will I pay each month?",
        ])
        ans = (f"With a fixed-rate amortizing loan:\n- monthly rate i = {rate:g}% / 12 ≈ {i:.6f}\n"
               f"- number of payments N = {years} × 12 = {n}\n"
               f"- payment M = P × i / (1 - (1 + i)^-N) ≈ ${pay:,.2f}\n\n"
               f"Over {years} years you would pay about ${total:,.2f} in total, including ${total - p:,.2f} of interest.")
        reasoning = (f"Amortization formula with P = {p:,}, i = {i:.6f}, N = {n}. (1 + i)^-N = {(1 + i) ** -n:.6f}, "
                     f"so M = {p:,} × {i:.6f} / {1 - (1 + i) ** -n:.6f} ≈ {pay:,.2f}.")
    else:
        what = ["房贷", "车贷"][kind]
        q = rng.choice([
            f"{what}{p:,}元，年利率{rate:g}%，期限{years}年，等额本息每月还多少？",
            f"我要贷款{p:,}元（{what}），{years}年，年利率{rate:g}%，按等额本息算月供是多少？",
        ])
        ans = (f"等额本息计算：\n- 月利率 i = {rate:g}% ÷ 12 ≈ {i:.6f}\n- 还款期数 N = {years} × 12 = {n}\n"
               f"- 月供 M = P × i ÷ (1 - (1 + i)^(-N)) ≈ {pay:,.2f}元\n\n"
               f"{years}年共还款约{total:,.2f}元，其中利息约{total - p:,.2f}元。")
        reasoning = (f"等额本息公式，P = {p:,}，i = {i:.6f}，N = {n}。(1 + i)^(-N) = {(1 + i) ** -n:.6f}，"
                     f"所以 M = {p:,} × {i:.6f} ÷ {1 - (1 + i) ** -n:.6f} ≈ {pay:,.2f}。")
    return _Task(q, ans, reasoning=reasoning)


def fin_ratios(rng, en):
    co = _pick(rng, en, _CO_EN, _CO_ZH)
    y = rng.randint(2015, 2024)
    cash, ar, inv, other = rng.randint(20, 300), rng.randint(20, 300), rng.randint(10, 400), rng.randint(0, 60)
    ca = cash + ar + inv + other
    cl = rng.randint(int(ca * 0.4), int(ca * 1.5))
    ltd, eq = rng.randint(0, 900), rng.randint(200, 2500)
    tl = cl + ltd
    cr, qr, de = ca / cl, (cash + ar) / cl, tl / eq
    which = rng.choice(["current", "quick", "de", "all"])
    if en:
        ctx = (f"{co}: balance sheet as of December 31, {y} (USD millions)\n- Cash and equivalents: {cash}\n"
               f"- Accounts receivable: {ar}\n- Inventory: {inv}\n- Other current assets: {other}\n"
               f"- Total current liabilities: {cl}\n- Long-term debt: {ltd}\n- Shareholders' equity: {eq}")
        health = ("comfortably covers" if cr >= 1.5 else "covers" if cr >= 1 else "does not fully cover")
        parts = {
            "current": f"Current assets = {cash} + {ar} + {inv} + {other} = {ca}.\nCurrent ratio = current assets / current liabilities = {ca} / {cl} ≈ {cr:.2f}. "
                       f"The company {health} its short-term obligations with current assets.",
            "quick": f"Quick ratio = (cash + receivables) / current liabilities = ({cash} + {ar}) / {cl} ≈ {qr:.2f}. "
                     "It leaves out inventory, which may be hard to sell quickly.",
            "de": f"Total liabilities = {cl} + {ltd} = {tl}.\nDebt-to-equity (total liabilities / equity) = {tl} / {eq} ≈ {de:.2f}. "
                  + ("Leverage is moderate." if de < 1 else "Liabilities exceed equity, so the company is fairly leveraged."),
        }
        q = {"current": "What is the company's current ratio?",
             "quick": "Calculate the quick ratio from the balance sheet below.",
             "de": "What is the debt-to-equity ratio, using total liabilities?",
             "all": "Compute the current ratio, quick ratio and debt-to-equity ratio (total liabilities / equity)."}[which]
    else:
        ctx = (f"{co} {y}年12月31日资产负债表摘要（单位：百万元）\n- 货币资金：{cash}\n- 应收账款：{ar}\n- 存货：{inv}\n"
               f"- 其他流动资产：{other}\n- 流动负债合计：{cl}\n- 长期借款：{ltd}\n- 股东权益：{eq}")
        health = "较为充足" if cr >= 1.5 else "基本可以覆盖" if cr >= 1 else "不足以覆盖"
        parts = {
            "current": f"流动资产 = {cash} + {ar} + {inv} + {other} = {ca}。\n流动比率 = 流动资产 ÷ 流动负债 = {ca} ÷ {cl} ≈ {cr:.2f}，"
                       f"流动资产对短期债务的保障{health}。",
            "quick": f"速动比率 = (货币资金 + 应收账款) ÷ 流动负债 = ({cash} + {ar}) ÷ {cl} ≈ {qr:.2f}。这里剔除了变现较慢的存货。",
            "de": f"负债总额 = {cl} + {ltd} = {tl}。\n产权比率（负债总额 ÷ 股东权益）= {tl} ÷ {eq} ≈ {de:.2f}，"
                  + ("杠杆水平适中。" if de < 1 else "负债高于股东权益，杠杆偏高。"),
        }
        q = {"current": "根据下面的资产负债表，计算公司的流动比率。",
             "quick": "请根据以下数据计算速动比率。",
             "de": "用负债总额计算该公司的产权比率（负债/股东权益）。",
             "all": "请计算流动比率、速动比率和产权比率（负债总额 ÷ 股东权益）。"}[which]
    ans = "\n\n".join(parts.values()) if which == "all" else parts[which]
    reasoning = (f"Current assets {ca} (cash {cash}, receivables {ar}, inventory {inv}, other {other}); current liabilities {cl}; "
                 f"total liabilities {cl} + {ltd} = {tl}; equity {eq}. Ratios: {cr:.4f}, {qr:.4f}, {de:.4f}." if en else
                 f"流动资产 {ca}（货币资金 {cash}、应收 {ar}、存货 {inv}、其他 {other}），流动负债 {cl}，"
                 f"负债总额 {cl} + {ltd} = {tl}，股东权益 {eq}。三个比率：{cr:.4f}、{qr:.4f}、{de:.4f}。")
    return _Task(q, ans, ctx=ctx, reasoning=reasoning)


def fin_pe(rng, en):
    price = rng.randint(500, 50000) / 100
    kind = rng.choices(["pe", "yield", "loss"], [5, 4, 1])[0]
    if kind == "pe":
        eps = rng.randint(10, min(1500, int(price * 100 / 4))) / 100
        pe = price / eps
        if en:
            q = f"A stock trades at ${price:.2f} and has earnings per share of ${eps:.2f}. What is its P/E ratio?"
            a = (f"P/E = price / EPS = {price:.2f} / {eps:.2f} ≈ {pe:.2f}.\n\n"
                 f"Investors are paying about ${pe:.2f} for each $1 of annual earnings.")
        else:
            q = f"某股票股价{price:.2f}元，每股收益{eps:.2f}元，市盈率是多少？"
            a = f"市盈率 = 股价 ÷ 每股收益 = {price:.2f} ÷ {eps:.2f} ≈ {pe:.2f}倍。\n\n即投资者为每1元年度盈利支付约{pe:.2f}元。"
        return _Task(q, a, reasoning=f"{price:.2f} / {eps:.2f} = {pe:.4f}")
    if kind == "yield":
        dps = max(0.01, round(price * rng.uniform(0.005, 0.07), 2))
        yld = dps / price * 100
        if en:
            q = f"What is the dividend yield of a stock priced at ${price:.2f} that pays ${dps:.2f} per share in annual dividends?"
            a = f"Dividend yield = annual dividend / price = {dps:.2f} / {price:.2f} × 100% ≈ {yld:.2f}%."
        else:
            q = f"一只股票价格{price:.2f}元，每年每股分红{dps:.2f}元，股息率是多少？"
            a = f"股息率 = 每股年分红 ÷ 股价 × 100% = {dps:.2f} ÷ {price:.2f} × 100% ≈ {yld:.2f}%。"
        return _Task(q, a, reasoning=f"{dps:.2f} / {price:.2f} = {yld / 100:.4f}")
    eps = -rng.randint(5, 500) / 100
    if en:
        q = f"A company's stock is at ${price:.2f} and its EPS is -${-eps:.2f}. What is the P/E ratio?"
        a = ("The P/E ratio isn't meaningful here: with negative earnings per share "
             f"({eps:.2f}), price / EPS would be negative, so it is usually reported as \"N/A\". "
             "Look at price-to-sales or forward earnings estimates instead.")
    else:
        q = f"某公司股价{price:.2f}元，每股收益为-{-eps:.2f}元，市盈率是多少？"
        a = f"每股收益为负（{eps:.2f}元）时，市盈率没有意义，通常记为“不适用”或“亏损”。可以改看市销率或预测市盈率。"
    return _Task(q, a)


_FX = [("USD", "CNY", "美元", "人民币", 6.8, 7.4), ("EUR", "USD", "欧元", "美元", 1.02, 1.15),
       ("GBP", "USD", "英镑", "美元", 1.2, 1.35), ("USD", "JPY", "美元", "日元", 130, 155),
       ("EUR", "CNY", "欧元", "人民币", 7.4, 8.1)]


def fin_fx(rng, en):
    a, b, a_zh, b_zh, lo, hi = rng.choice(_FX)
    rate = round(rng.uniform(lo, hi), 4)
    amt = rng.randrange(100, 100_001, 50)
    if rng.random() < 0.5:
        res = amt * rate
        if en:
            q = f"Assuming 1 {a} = {rate} {b}, how much is {amt:,} {a} in {b}?"
            ans = f"{amt:,} {a} × {rate} = {res:,.2f} {b}."
        else:
            q = f"假设汇率为1{a_zh}={rate}{b_zh}，{amt:,}{a_zh}可以兑换多少{b_zh}？"
            ans = f"{amt:,} × {rate} = {res:,.2f}，即约{res:,.2f}{b_zh}。"
    else:
        res = amt / rate
        if en:
            q = f"If the exchange rate is 1 {a} = {rate} {b}, how many {a} do I get for {amt:,} {b}?"
            ans = f"{amt:,} {b} ÷ {rate} ≈ {res:,.2f} {a} (before any conversion fees)."
        else:
            q = f"汇率按1{a_zh}={rate}{b_zh}计算，{amt:,}{b_zh}能换多少{a_zh}？"
            ans = f"{amt:,} ÷ {rate} ≈ {res:,.2f}，约{res:,.2f}{a_zh}（未计手续费）。"
    return _Task(q, ans)


_DRIVERS_UP = [
    ("Growth was driven by strong demand for its core products.", "增长主要得益于核心产品需求强劲"),
    ("The company cited higher volumes in its core markets.", "公司表示核心市场销量上升"),
    ("New product launches contributed most of the increase.", "新产品上市贡献了大部分增量"),
    ("Price increases offset slightly lower unit sales.", "提价抵消了销量的小幅下滑"),
]
_DRIVERS_DOWN = [
    ("Management blamed weaker consumer spending.", "管理层将其归因于消费需求疲软"),
    ("The decline reflected lower commodity prices.", "下滑主要受大宗商品价格走低影响"),
    ("Sales were hurt by supply chain disruptions.", "供应链中断拖累了销售"),
    ("The company pointed to the loss of a major customer.", "公司称失去了一家大客户"),
]


def fin_earnings(rng, en):
    co = _pick(rng, en, _CO_EN, _CO_ZH)
    qn, y = rng.randint(1, 4), rng.randint(2019, 2025)
    rev = rng.randint(1000, 50000) / 10
    g = rng.randint(-150, 350) / 10 or 1.0
    ni0 = round(rev * rng.uniform(0.03, 0.2), 1)
    ni = round(ni0 * (1 + rng.uniform(-0.5, 0.6)), 1)
    nchg = (ni - ni0) / ni0 * 100
    guide = rng.choice(["raised", "maintained", "lowered"])
    lo = round(rev * 4 * rng.uniform(0.95, 1.05) / 10) * 10
    hi = lo + rng.choice([20, 50, 100, 150])
    d_en, d_zh = rng.choice(_DRIVERS_UP if g > 0 else _DRIVERS_DOWN)
    task = rng.choice(["summary", "figures", "tone"])
    score = (1 if g > 0 else -1) + (1 if ni > ni0 else -1) + {"raised": 1, "maintained": 0, "lowered": -1}[guide]
    if en:
        ctx = (f"{co} reported Q{qn} {y} revenue of ${rev:,.1f} million, {'up' if g > 0 else 'down'} {abs(g):.1f}% "
               f"year over year. Net income was ${ni:,.1f} million, compared with ${ni0:,.1f} million in the same "
               f"quarter last year. {d_en} Management {guide} its full-year revenue guidance "
               f"{'at' if guide == 'maintained' else 'to'} ${lo:,}-{hi:,} million.")
        if task == "summary":
            q = rng.choice(["Summarize this earnings report in two sentences.", "Give me a short summary of the following results."])
            ans = (f"{co}'s Q{qn} {y} revenue {'rose' if g > 0 else 'fell'} {abs(g):.1f}% to ${rev:,.1f} million, and net income "
                   f"{'increased' if ni > ni0 else 'decreased'} from ${ni0:,.1f} million to ${ni:,.1f} million ({nchg:+.1f}%). "
                   f"Management {guide} full-year revenue guidance {'at' if guide == 'maintained' else 'to'} ${lo:,}-{hi:,} million.")
        elif task == "figures":
            q = "Extract the key figures from this report as a bulleted list."
            ans = (f"- Revenue: ${rev:,.1f} million ({g:+.1f}% YoY)\n- Net income: ${ni:,.1f} million "
                   f"(vs ${ni0:,.1f} million a year earlier, {nchg:+.1f}%)\n- Full-year revenue guidance: "
                   f"${lo:,}-{hi:,} million ({guide})")
        else:
            q = "Is this report good or bad news for shareholders? Explain briefly."
            verdict = "Mostly good news" if score >= 2 else "Mostly bad news" if score <= -2 else "Mixed news"
            ans = (f"{verdict}. Revenue {'grew' if g > 0 else 'shrank'} {abs(g):.1f}%, net income "
                   f"{'rose' if ni > ni0 else 'fell'} {abs(nchg):.1f}%, and guidance was {guide}. "
                   "How the stock reacts also depends on what analysts expected.")
    else:
        ctx = (f"{co}公布{y}年第{_ZH_DIGITS[qn]}季度业绩：营业收入{rev:,.1f}亿元，同比{'增长' if g > 0 else '下降'}{abs(g):.1f}%；"
               f"净利润{ni:,.1f}亿元，上年同期为{ni0:,.1f}亿元。{d_zh}。管理层"
               f"{ {'raised': '上调', 'maintained': '维持', 'lowered': '下调'}[guide]}全年营收指引"
               f"{'为' if guide == 'maintained' else '至'}{lo:,}-{hi:,}亿元。")
        g_zh = {"raised": "上调", "maintained": "维持", "lowered": "下调"}[guide]
        if task == "summary":
            q = rng.choice(["用两句话概括这份业绩公告。", "请简要总结以下业绩。"])
            ans = (f"{co}{y}年第{_ZH_DIGITS[qn]}季度营收{rev:,.1f}亿元，同比{'增长' if g > 0 else '下降'}{abs(g):.1f}%；"
                   f"净利润由上年同期的{ni0:,.1f}亿元{'增至' if ni > ni0 else '降至'}{ni:,.1f}亿元（{nchg:+.1f}%）。"
                   f"管理层{g_zh}全年营收指引{'为' if guide == 'maintained' else '至'}{lo:,}-{hi:,}亿元。")
        elif task == "figures":
            q = "请把这段公告中的关键数据列成要点。"
            ans = (f"- 营业收入：{rev:,.1f}亿元（同比{g:+.1f}%）\n- 净利润：{ni:,.1f}亿元（上年同期{ni0:,.1f}亿元，{nchg:+.1f}%）\n"
                   f"- 全年营收指引：{lo:,}-{hi:,}亿元（{g_zh}）")
        else:
            q = "这份业绩对股东来说是利好还是利空？简单说明理由。"
            verdict = "整体偏利好" if score >= 2 else "整体偏利空" if score <= -2 else "喜忧参半"
            ans = (f"{verdict}。营收{'增长' if g > 0 else '下降'}{abs(g):.1f}%，净利润{'增长' if ni > ni0 else '下降'}"
                   f"{abs(nchg):.1f}%，全年指引{g_zh}。股价的实际反应还取决于市场预期。")
    return _Task(q, ans, ctx=ctx)


_HEADLINE_EVENTS = [
    ("beats quarterly earnings expectations", "季度盈利超出市场预期", "positive",
     "beating expectations usually lifts the share price", "盈利超预期通常会推高股价"),
    ("cuts full-year revenue guidance", "下调全年营收指引", "negative",
     "lower guidance signals weaker future sales", "下调指引意味着未来销售可能走弱"),
    ("announces a ${x} million share buyback", "宣布{x}亿元股票回购计划", "positive",
     "buybacks return cash to shareholders and signal confidence", "回购向股东返还现金，也显示管理层的信心"),
    ("faces regulatory probe over accounting practices", "因会计问题遭监管调查", "negative",
     "an accounting probe raises legal and reputational risk", "会计调查带来法律和声誉风险"),
    ("names a new chief financial officer", "任命新任首席财务官", "neutral",
     "a routine executive change has no clear direction by itself", "常规的高管变动本身方向不明确"),
    ("reports a wider-than-expected quarterly loss", "季度亏损超出预期", "negative",
     "a bigger loss than expected disappoints investors", "亏损超预期会让投资者失望"),
    ("raises its dividend by {x}%", "将股息提高{x}%", "positive",
     "a higher dividend means more income for shareholders", "提高股息意味着股东收益增加"),
    ("recalls {x},000 units over a safety defect", "因安全缺陷召回{x}000件产品", "negative",
     "recalls bring costs and hurt the brand", "召回会带来成本并损害品牌"),
    ("wins a ${x} million government contract", "中标{x}亿元政府合同", "positive",
     "a large contract adds visible future revenue", "大额合同带来可见的未来收入"),
    ("will hold its annual shareholder meeting on {d}", "将于{d}召开年度股东大会", "neutral",
     "a scheduled meeting is routine news", "例行会议属于常规信息"),
    ("downgraded by two credit rating agencies", "遭两家评级机构下调信用评级", "negative",
     "a downgrade raises borrowing costs", "评级下调会提高融资成本"),
    ("completes the acquisition of a smaller rival", "完成对一家小型竞争对手的收购", "neutral",
     "the effect depends on the price paid and integration", "影响取决于收购价格和整合情况"),
]


def fin_sentiment(rng, en):
    co = _pick(rng, en, _CO_EN, _CO_ZH)
    ev_en, ev_zh, label, why_en, why_zh = rng.choice(_HEADLINE_EVENTS)
    x = rng.randint(2, 95)
    d_en = f"{rng.choice(['May', 'June', 'April', 'March'])} {rng.randint(1, 28)}"
    d_zh = f"{rng.randint(3, 6)}月{rng.randint(1, 28)}日"
    if en:
        head = f"{co} {ev_en.format(x=x, d=d_en)}"
        q = rng.choice(["Classify the sentiment of this financial headline as positive, negative or neutral:",
                        "Is this headline positive, negative or neutral for the company's stock?"])
        ans = f"{label.capitalize()}: {why_en}."
    else:
        head = f"{co}{ev_zh.format(x=x, d=d_zh)}"
        q = rng.choice(["判断这条财经新闻标题的情绪（正面、负面或中性）：", "这条新闻对公司股价是正面、负面还是中性？"])
        ans = f"{ {'positive': '正面', 'negative': '负面', 'neutral': '中性'}[label]}。{why_zh}。"
    if rng.random() < 0.5:
        return _Task(q, ans, ctx=head)
    return _Task(f"{q}\n\"{head}\"" if en else f"{q}“{head}”", ans)


_FIN_CONCEPTS = [
    ("the P/E ratio", "市盈率",
     "The price-to-earnings (P/E) ratio is a stock's price divided by its earnings per share. A P/E of 20 means investors pay $20 for every $1 of annual profit. A high P/E can mean investors expect fast growth, or that the stock is expensive; compare it with peers in the same industry.",
     "市盈率（P/E）是股价除以每股收益。市盈率为20，意味着投资者为每1元年利润支付20元。市盈率高可能代表市场预期增长较快，也可能说明估值偏贵，最好与同行业公司比较。"),
    ("diversification", "分散投资",
     "Diversification means spreading your money across different assets, such as stocks, bonds and different industries or countries, so that one bad investment does not sink your whole portfolio. It reduces risk without necessarily reducing expected return.",
     "分散投资就是把资金分配到不同的资产上，比如股票、债券以及不同的行业和地区，这样单一投资出问题时不会拖垮整个组合。它能降低风险，但不一定降低预期收益。"),
    ("bond duration", "债券久期",
     "Duration measures how sensitive a bond's price is to changes in interest rates. Roughly, a bond with a duration of 5 years loses about 5% of its value if rates rise by 1 percentage point. Longer maturities and lower coupons mean longer duration.",
     "久期衡量债券价格对利率变化的敏感程度。粗略地说，久期为5年的债券，在利率上升1个百分点时价格大约下跌5%。期限越长、票息越低，久期越长。"),
    ("inflation", "通货膨胀",
     "Inflation is the general rise in prices over time, which means each unit of money buys less. It is usually measured by a consumer price index. Moderate inflation is normal; high inflation erodes savings, which is why central banks raise interest rates to fight it.",
     "通货膨胀是指物价总体水平持续上涨，同样的钱能买到的东西变少。通常用消费者价格指数（CPI）衡量。温和的通胀是正常的，但高通胀会侵蚀储蓄，所以央行往往通过加息来抑制通胀。"),
    ("an ETF", "ETF（交易型开放式指数基金）",
     "An exchange-traded fund (ETF) is a basket of securities, often tracking an index, that trades on a stock exchange like a single stock. ETFs usually have low fees and let you diversify with one purchase.",
     "ETF 是一种在交易所上市交易的基金，通常跟踪某个指数，像股票一样可以随时买卖。ETF 费率一般较低，买一份就能实现一定程度的分散投资。"),
    ("liquidity", "流动性",
     "Liquidity is how quickly and cheaply an asset can be turned into cash without moving its price. Cash is perfectly liquid, large-company stocks are very liquid, while real estate or private equity are illiquid.",
     "流动性是指资产能以多快的速度、多低的成本变现，而不明显影响价格。现金流动性最好，大盘股流动性很高，而房地产和私募股权的流动性较差。"),
    ("market capitalization", "市值",
     "Market capitalization is the total value of a company's shares: share price times the number of shares outstanding. A company with 1 billion shares at $50 has a market cap of $50 billion.",
     "市值是公司全部股份的总价值，等于股价乘以总股本。比如总股本10亿股、股价50元的公司，市值为500亿元。"),
    ("dollar-cost averaging", "定投（定期定额投资）",
     "Dollar-cost averaging means investing a fixed amount at regular intervals, for example $500 every month, regardless of price. You buy more shares when prices are low and fewer when they are high, which smooths your average cost and removes the need to time the market.",
     "定投是指每隔固定时间投入固定金额，比如每月投500元，不管价格高低。价格低时买得多，价格高时买得少，可以摊平成本，也不用去择时。"),
    ("free cash flow", "自由现金流",
     "Free cash flow is the cash a company generates from operations minus its capital expenditures. It is the money available to pay dividends, buy back shares or pay down debt, and is harder to manipulate than net income.",
     "自由现金流等于经营活动现金流减去资本开支，是公司可以用来分红、回购或还债的钱。相比净利润，它更难被粉饰。"),
    ("an inverted yield curve", "收益率曲线倒挂",
     "A yield curve is inverted when short-term government bonds pay higher yields than long-term ones. It suggests investors expect rates to fall, often because of a slowdown, and it has preceded many past recessions, though not with precise timing.",
     "收益率曲线倒挂是指短期国债收益率高于长期国债收益率。这通常说明市场预期未来利率下降、经济放缓，历史上多次衰退之前都出现过倒挂，但时间上并不精确。"),
    ("EBITDA", "EBITDA（息税折旧摊销前利润）",
     "EBITDA stands for earnings before interest, taxes, depreciation and amortization. It approximates operating profitability before financing and accounting choices, which makes companies easier to compare, but it ignores capital spending and debt costs.",
     "EBITDA 是息税折旧摊销前利润，反映剔除融资结构和折旧摊销等会计因素之前的经营盈利能力，便于公司间比较，但它忽略了资本开支和债务成本。"),
    ("short selling", "卖空（做空）",
     "Short selling means borrowing shares, selling them, and buying them back later to return to the lender. You profit if the price falls. Because a price can rise without limit, potential losses are unlimited.",
     "卖空是先借入股票卖出，之后再买回归还给出借方。如果股价下跌就能获利。由于股价上涨没有上限，卖空的潜在亏损理论上是无限的。"),
    ("a stock versus a bond", "股票和债券的区别",
     "A stock is a share of ownership in a company: you share in its profits and growth, with no guaranteed return. A bond is a loan to a company or government: you receive fixed interest and your principal back at maturity, unless the issuer defaults. Bonds are usually less volatile than stocks.",
     "股票代表公司的所有权，可以分享公司的利润和成长，但收益没有保证；债券则是借给公司或政府的钱，按期获得固定利息，到期收回本金（除非发行人违约）。债券的波动通常小于股票。"),
]

_CONCEPT_Q_EN = ["What is {x}?", "Can you explain {x} in simple terms?", "Briefly explain {x}.",
                 "I'm new to investing. What is {x}?", "What should I know about {x}?"]
_CONCEPT_Q_ZH = ["什么是{x}？", "请用通俗的话解释一下{x}。", "简单介绍一下{x}。", "我刚开始学投资，{x}是什么意思？", "能讲讲{x}吗？"]


def _concept(rng, en, bank, q_en, q_zh):
    x_en, x_zh, a_en, a_zh = rng.choice(bank)
    if en:
        q = rng.choice(q_en).format(x=x_en)
        q = q[0].upper() + q[1:]
        return _Task(q, a_en)
    return _Task(rng.choice(q_zh).format(x=x_zh), a_zh)


def fin_concept(rng, en):
    return _concept(rng, en, _FIN_CONCEPTS, _CONCEPT_Q_EN, _CONCEPT_Q_ZH)


# ---------------------------------------------------------------- math

_OPS = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "×": lambda a, b: a * b, "÷": lambda a, b: a // b}


def math_arith(rng, en):
    op = rng.choice(list(_OPS))
    if op in "+-":
        a, b = rng.randint(10, 9999), rng.randint(10, 9999)
    elif op == "×":
        a, b = rng.randint(11, 999), rng.randint(2, 99)
    else:
        b, r0 = rng.randint(2, 99), rng.randint(2, 999)
        a = b * r0
    r = _OPS[op](a, b)
    if en:
        q = rng.choice(["What is {a} {op} {b}?", "Calculate {a} {op} {b}.", "Compute {a} {op} {b}.", "{a} {op} {b} = ?"])
    else:
        q = rng.choice(["计算 {a} {op} {b}。", "{a} {op} {b} 等于多少？", "请算一下 {a} {op} {b}。", "{a} {op} {b} = ?"])
    q = q.format(a=a, op=op, b=b)
    steps = None
    if op == "×" and b >= 11 and b % 10:
        tens, ones = b - b % 10, b % 10
        steps = f"{a} × {b} = {a} × {tens} + {a} × {ones} = {a * tens} + {a * ones} = {r}"
    elif op == "÷":
        steps = f"{a} ÷ {b} = {r}, since {b} × {r} = {a}" if en else f"{a} ÷ {b} = {r}，因为 {b} × {r} = {a}"
    if steps and rng.random() < 0.7:
        ans = steps + ("." if en else "。")
    else:
        ans = rng.choice([f"{a} {op} {b} = {r}", f"The answer is {r}." if en else f"答案是 {r}。"])
        if not ans.endswith((".", "。")):
            ans += "." if en else "。"
    return _Task(q, ans, reasoning=steps or f"{a} {op} {b} = {r}")


def math_expr(rng, en):
    shape = rng.randrange(4)
    a, b, c = rng.randint(2, 60), rng.randint(2, 60), rng.randint(2, 12)
    if shape == 0:
        expr, s = f"({a} + {b}) × {c}", a + b
        val, steps = s * c, [f"{a} + {b} = {s}", f"{s} × {c} = {s * c}"]
    elif shape == 1:
        expr, s = f"{a} × {c} + {b}", a * c
        val, steps = s + b, [f"{a} × {c} = {s}", f"{s} + {b} = {s + b}"]
    elif shape == 2:
        expr, s = f"{a} - {b} × {c}", b * c
        val, steps = a - s, [f"{b} × {c} = {s}", f"{a} - {s} = {a - s}"]
    else:
        k = rng.randint(2, 20)
        a = b + c * k
        expr, s = f"({a} - {b}) ÷ {c}", a - b
        val, steps = k, [f"{a} - {b} = {s}", f"{s} ÷ {c} = {k}"]
    if en:
        q = rng.choice([f"Evaluate: {expr}", f"What is the value of {expr}?"])
        ans = f"First {steps[0]}, then {steps[1]}.\n\nSo {expr} = {val}."
        reasoning = f"Order of operations: {steps[0]}; {steps[1]}."
    else:
        q = rng.choice([f"求值：{expr}", f"{expr} 的结果是多少？"])
        ans = f"先算 {steps[0]}，再算 {steps[1]}。\n\n所以 {expr} = {val}。"
        reasoning = f"按运算顺序：{steps[0]}；{steps[1]}。"
    return _Task(q, ans, reasoning=reasoning)


_NAMES_EN = ["Anna", "Ben", "Carlos", "Diana", "Ethan", "Fatima", "Grace", "Hiro", "Ivy", "Jonas", "Leila", "Marco"]
_NAMES_ZH = ["小明", "小红", "王芳", "李雷", "韩梅梅", "张伟", "刘洋", "陈静", "赵磊", "孙悦"]
_ITEMS = [("notebooks", "本笔记本", "本"), ("pens", "支钢笔", "支"), ("coffees", "杯咖啡", "杯"),
          ("movie tickets", "张电影票", "张"), ("sandwiches", "个三明治", "个"), ("books", "本书", "本")]


def math_word(rng, en):
    kind = rng.randrange(4)
    who = _pick(rng, en, _NAMES_EN, _NAMES_ZH)
    if kind == 0:
        item_en, item_zh, unit = rng.choice(_ITEMS)
        n, price = rng.randint(2, 9), rng.randint(150, 2500) / 100
        cost = round(n * price, 2)
        bill = next(x for x in (20, 50, 100, 200, 500) if x > cost)
        change = round(bill - cost, 2)
        if en:
            q = f"{who} buys {n} {item_en} at ${price:.2f} each and pays with a ${bill} bill. How much change does {who} get?"
            ans = f"Cost: {n} × ${price:.2f} = ${cost:.2f}.\nChange: ${bill} - ${cost:.2f} = ${change:.2f}.\n\n{who} gets ${change:.2f} back."
        else:
            q = f"{who}买了{n}{item_zh}，每{unit}{price:.2f}元，付了{bill}元，应找回多少钱？"
            ans = f"总价：{n} × {price:.2f} = {cost:.2f}元。\n找零：{bill} - {cost:.2f} = {change:.2f}元。\n\n{who}应找回{change:.2f}元。"
        return _Task(q, ans, reasoning=f"{n} × {price:.2f} = {cost:.2f}; {bill} - {cost:.2f} = {change:.2f}.")
    if kind == 1:
        hours, speed = rng.randint(2, 9), rng.randint(40, 320)
        dist = hours * speed
        if en:
            q = f"A train travels {dist} km in {hours} hours. What is its average speed?"
            ans = f"Average speed = distance / time = {dist} km / {hours} h = {speed} km/h."
        else:
            q = f"一列火车{hours}小时行驶了{dist}千米，平均速度是多少？"
            ans = f"平均速度 = 路程 ÷ 时间 = {dist} ÷ {hours} = {speed}千米/小时。"
        hh, mm = divmod(round(1000 / speed * 60), 60)
        fq, fa = (("At that speed, how long would 1,000 km take?",
                   f"1,000 km / {speed} km/h ≈ {1000 / speed:.2f} hours (about {hh} h {mm} min).")
                  if en else
                  ("按这个速度，走1000千米要多久？",
                   f"1000 ÷ {speed} ≈ {1000 / speed:.2f}小时（约{hh}小时{mm}分钟）。"))
        return _Task(q, ans, reasoning=f"{dist} / {hours} = {speed}", followups=[(fq, fa)])
    if kind == 2:
        total, k = rng.randint(20, 200), rng.randint(3, 12)
        each, left = divmod(total, k)
        if en:
            q = f"{total} apples are shared equally among {k} children. How many does each child get, and how many are left over?"
            ans = f"{total} ÷ {k} = {each} remainder {left}.\n\nEach child gets {each} apples and {left} {'is' if left == 1 else 'are'} left over."
        else:
            q = f"{total}个苹果平均分给{k}个小朋友，每人分到几个？还剩几个？"
            ans = f"{total} ÷ {k} = {each} 余 {left}。\n\n每人分到{each}个，还剩{left}个。"
        return _Task(q, ans, reasoning=(f"{k} × {each} = {k * each}, and {total} - {k * each} = {left}." if en
                                        else f"{k} × {each} = {k * each}，{total} - {k * each} = {left}。"))
    price, off = rng.randint(20, 800), rng.choice([10, 15, 20, 25, 30, 40, 50])
    sale = price * (100 - off) / 100
    if en:
        q = f"A jacket costs ${price}. It's on sale for {off}% off. What is the sale price?"
        ans = f"Discount: {off}% × ${price} = ${price * off / 100:.2f}.\nSale price: ${price} - ${price * off / 100:.2f} = ${sale:.2f}."
    else:
        q = f"一件外套原价{price}元，打{_num((100 - off) / 10, 1)}折，现价多少？"
        ans = f"打{_num((100 - off) / 10, 1)}折即按原价的{100 - off}%出售：{price} × {100 - off}% = {sale:.2f}元。"
    return _Task(q, ans, reasoning=f"{price} × {(100 - off) / 100:g} = {sale:.2f}")


def math_percent(rng, en):
    if rng.random() < 0.5:
        p, x = rng.choice([5, 10, 12, 15, 20, 25, 30, 35, 40, 45, 60, 75, 80]), rng.randint(10, 2000)
        r = p * x / 100
        q = f"What is {p}% of {x}?" if en else f"{x}的{p}%是多少？"
        ans = f"{p}% of {x} = {p}/100 × {x} = {_num(r)}." if en else f"{x} × {p}% = {x} × {p / 100:g} = {_num(r)}。"
        return _Task(q, ans, reasoning=f"{x} × {p / 100:g} = {_num(r)}")
    b = rng.randint(20, 1000)
    a = rng.randint(1, b)
    pct = a / b * 100
    q = f"{a} is what percent of {b}?" if en else f"{a}占{b}的百分之多少？"
    ans = (f"{a} / {b} × 100% ≈ {pct:.2f}%." if en else f"{a} ÷ {b} × 100% ≈ {pct:.2f}%。")
    return _Task(q, ans, reasoning=f"{a} / {b} = {a / b:.4f}")


def math_equation(rng, en):
    a, x, b = rng.randint(2, 12), rng.randint(-20, 20), rng.randint(-50, 50)
    c = a * x + b
    eq = f"{a}x {_signed(b)} = {c}"
    if en:
        q = rng.choice([f"Solve for x: {eq}", f"Find x if {eq}."])
        ans = (f"Move the constant: {a}x = {c} {_signed(-b)} = {c - b}.\nDivide by {a}: x = {c - b} / {a} = {x}.\n\n"
               f"Check: {a} × ({x}) {_signed(b)} = {c}. So x = {x}.")
        reasoning = f"{a}x = {c - b}, so x = {x}. Substituting back: {a * x} {_signed(b)} = {c}. Correct."
    else:
        q = rng.choice([f"解方程：{eq}", f"求 x：{eq}"])
        ans = (f"移项：{a}x = {c} {_signed(-b)} = {c - b}。\n两边同除以 {a}：x = {c - b} ÷ {a} = {x}。\n\n"
               f"检验：{a} × ({x}) {_signed(b)} = {c}。所以 x = {x}。")
        reasoning = f"{a}x = {c - b}，x = {x}。代回：{a * x} {_signed(b)} = {c}，正确。"
    return _Task(q, ans, reasoning=reasoning)


def math_geometry(rng, en):
    kind = rng.randrange(3)
    if kind == 0:
        w, h = rng.randint(2, 80), rng.randint(2, 80)
        if en:
            q = f"A rectangle is {w} cm wide and {h} cm long. What are its area and perimeter?"
            ans = f"Area = {w} × {h} = {w * h} cm².\nPerimeter = 2 × ({w} + {h}) = {2 * (w + h)} cm."
        else:
            q = f"一个长方形宽{w}厘米，长{h}厘米，面积和周长分别是多少？"
            ans = f"面积 = {w} × {h} = {w * h}平方厘米。\n周长 = 2 × ({w} + {h}) = {2 * (w + h)}厘米。"
        return _Task(q, ans)
    if kind == 1:
        r = rng.randint(1, 50)
        area, circ = math.pi * r * r, 2 * math.pi * r
        if en:
            q = f"What are the area and circumference of a circle with radius {r} m?"
            ans = f"Area = πr² = π × {r}² ≈ {area:,.2f} m².\nCircumference = 2πr = 2 × π × {r} ≈ {circ:,.2f} m."
        else:
            q = f"半径为{r}米的圆，面积和周长各是多少？"
            ans = f"面积 = πr² = π × {r}² ≈ {area:,.2f}平方米。\n周长 = 2πr = 2 × π × {r} ≈ {circ:,.2f}米。"
        return _Task(q, ans, reasoning=f"r = {r}, r² = {r * r}, π × {r * r} ≈ {area:.2f}; 2π × {r} ≈ {circ:.2f}.")
    a0, b0, c0 = rng.choice([(3, 4, 5), (5, 12, 13), (8, 15, 17), (7, 24, 25), (20, 21, 29)])
    k = rng.randint(1, 6)
    a, b, c = a0 * k, b0 * k, c0 * k
    if en:
        q = f"A right triangle has legs of {a} and {b}. How long is the hypotenuse?"
        ans = f"By the Pythagorean theorem, c = √({a}² + {b}²) = √({a * a} + {b * b}) = √{a * a + b * b} = {c}."
    else:
        q = f"直角三角形的两条直角边分别为{a}和{b}，斜边长多少？"
        ans = f"由勾股定理，c = √({a}² + {b}²) = √({a * a} + {b * b}) = √{a * a + b * b} = {c}。"
    return _Task(q, ans, reasoning=f"{a * a} + {b * b} = {c * c} = {c}²")


def math_stats(rng, en):
    xs = [rng.randint(1, 100) for _ in range(rng.randint(5, 8))]
    s, n = sum(xs), len(xs)
    srt = sorted(xs)
    med = srt[n // 2] if n % 2 else (srt[n // 2 - 1] + srt[n // 2]) / 2
    lst = ", ".join(map(str, xs))
    if en:
        q = rng.choice([f"Find the mean and median of: {lst}", f"What are the average and the median of these numbers: {lst}?"])
        ans = (f"Sum = {s}, count = {n}, so mean = {s} / {n} = {_num(s / n)}.\n"
               f"Sorted: {', '.join(map(str, srt))}. The median is {_num(med)}"
               + (" (the middle value)." if n % 2 else f" (the average of {srt[n // 2 - 1]} and {srt[n // 2]}).") )
    else:
        q = rng.choice([f"求这组数的平均数和中位数：{lst}", f"下面这些数的平均值和中位数是多少？{lst}"])
        ans = (f"总和 = {s}，个数 = {n}，平均数 = {s} ÷ {n} = {_num(s / n)}。\n"
               f"排序后：{', '.join(map(str, srt))}，中位数是{_num(med)}"
               + ("（正中间的数）。" if n % 2 else f"（中间两个数{srt[n // 2 - 1]}和{srt[n // 2]}的平均值）。"))
    reasoning = (f"Sum is {s} over {n} numbers; sorted the list is {srt}." if en
                 else f"总和 {s}，共 {n} 个数；排序后为 {srt}。")
    return _Task(q, ans, reasoning=reasoning)


# ---------------------------------------------------------------- coding

_FUNCS = [
    ("reverses a string", "反转一个字符串",
     "def reverse_string(s: str) -> str:\n    return s[::-1]",
     "The slice `s[::-1]` walks the string backwards with step -1.", "切片 `s[::-1]` 以步长 -1 从后往前取字符。"),
    ("checks whether a string is a palindrome, ignoring case and punctuation", "判断一个字符串是否是回文（忽略大小写和标点）",
     "def is_palindrome(text: str) -> bool:\n    chars = [c.lower() for c in text if c.isalnum()]\n    return chars == chars[::-1]",
     "It keeps only letters and digits, lowercases them, and compares the list with its reverse.",
     "先只保留字母和数字并转成小写，再与反转后的列表比较。"),
    ("returns the n-th Fibonacci number", "返回第 n 个斐波那契数",
     "def fibonacci(n: int) -> int:\n    a, b = 0, 1\n    for _ in range(n):\n        a, b = b, a + b\n    return a",
     "The loop is O(n) and avoids the exponential cost of naive recursion; fibonacci(10) returns 55.",
     "循环写法的时间复杂度是 O(n)，避免了朴素递归的指数级开销；fibonacci(10) 返回 55。"),
    ("computes the factorial of a non-negative integer", "计算非负整数的阶乘",
     "def factorial(n: int) -> int:\n    if n < 0:\n        raise ValueError(\"n must be non-negative\")\n    result = 1\n    for i in range(2, n + 1):\n        result *= i\n    return result",
     "factorial(5) returns 120; negative input raises ValueError. The standard library also has math.factorial.",
     "factorial(5) 返回 120，负数会抛出 ValueError。标准库里也有 math.factorial 可以直接用。"),
    ("checks whether a number is prime", "判断一个数是否为质数",
     "def is_prime(n: int) -> bool:\n    if n < 2:\n        return False\n    i = 2\n    while i * i <= n:\n        if n % i == 0:\n            return False\n        i += 1\n    return True",
     "It only tests divisors up to √n: if n had a larger factor, it would also have a smaller one.",
     "只需检查到 √n：如果 n 有大于 √n 的因数，就一定有一个小于 √n 的因数。"),
    ("counts the vowels in a string", "统计字符串中元音字母的个数",
     "def count_vowels(text: str) -> int:\n    return sum(1 for c in text.lower() if c in \"aeiou\")",
     "count_vowels(\"Hello World\") returns 3.", "count_vowels(\"Hello World\") 返回 3。"),
    ("flattens an arbitrarily nested list", "把任意嵌套的列表展平",
     "def flatten(items):\n    result = []\n    for item in items:\n        if isinstance(item, list):\n            result.extend(flatten(item))\n        else:\n            result.append(item)\n    return result",
     "flatten([1, [2, [3, 4]], 5]) returns [1, 2, 3, 4, 5].", "flatten([1, [2, [3, 4]], 5]) 返回 [1, 2, 3, 4, 5]。"),
    ("removes duplicates from a list while keeping the original order", "去除列表中的重复元素并保持原有顺序",
     "def dedupe(items: list) -> list:\n    return list(dict.fromkeys(items))",
     "Dicts keep insertion order, so dict.fromkeys keeps the first occurrence of each item. The items must be hashable.",
     "字典会保持插入顺序，所以 dict.fromkeys 保留每个元素第一次出现的位置。元素需要是可哈希的。"),
    ("returns the k most common words in a text", "返回一段文本中出现次数最多的 k 个单词",
     "from collections import Counter\n\ndef top_words(text: str, k: int = 3) -> list[tuple[str, int]]:\n    words = text.lower().split()\n    return Counter(words).most_common(k)",
     "Counter.most_common returns (word, count) pairs, most frequent first.", "Counter.most_common 按出现次数从高到低返回 (单词, 次数) 对。"),
    ("performs binary search on a sorted list and returns the index or -1", "在有序列表中做二分查找，找到返回下标，否则返回 -1",
     "def binary_search(items: list, target) -> int:\n    lo, hi = 0, len(items) - 1\n    while lo <= hi:\n        mid = (lo + hi) // 2\n        if items[mid] == target:\n            return mid\n        if items[mid] < target:\n            lo = mid + 1\n        else:\n            hi = mid - 1\n    return -1",
     "Each step halves the search range, so it runs in O(log n).", "每一步把查找范围缩小一半，时间复杂度为 O(log n)。"),
    ("splits a list into chunks of size n", "把列表按大小 n 切分成若干块",
     "def chunks(items: list, n: int) -> list[list]:\n    return [items[i:i + n] for i in range(0, len(items), n)]",
     "chunks([1, 2, 3, 4, 5], 2) returns [[1, 2], [3, 4], [5]].", "chunks([1, 2, 3, 4, 5], 2) 返回 [[1, 2], [3, 4], [5]]。"),
    ("merges two sorted lists into one sorted list", "把两个有序列表合并成一个有序列表",
     "def merge_sorted(a: list, b: list) -> list:\n    i = j = 0\n    out = []\n    while i < len(a) and j < len(b):\n        if a[i] <= b[j]:\n            out.append(a[i])\n            i += 1\n        else:\n            out.append(b[j])\n            j += 1\n    return out + a[i:] + b[j:]",
     "It walks both lists once, so it is O(len(a) + len(b)).", "两个列表各只遍历一次，复杂度为 O(len(a) + len(b))。"),
    ("computes the greatest common divisor of two integers", "求两个整数的最大公约数",
     "def gcd(a: int, b: int) -> int:\n    while b:\n        a, b = b, a % b\n    return abs(a)",
     "This is Euclid's algorithm; gcd(48, 18) returns 6. math.gcd does the same.", "这是欧几里得算法（辗转相除法），gcd(48, 18) 返回 6。标准库的 math.gcd 功能相同。"),
    ("converts Celsius to Fahrenheit", "把摄氏度转换为华氏度",
     "def celsius_to_fahrenheit(c: float) -> float:\n    return c * 9 / 5 + 32",
     "celsius_to_fahrenheit(100) returns 212.0.", "celsius_to_fahrenheit(100) 返回 212.0。"),
    ("sums the `amount` column of a CSV file", "对 CSV 文件中的 `amount` 列求和",
     "import csv\n\ndef total_amount(path: str) -> float:\n    with open(path, newline=\"\", encoding=\"utf-8\") as f:\n        return sum(float(row[\"amount\"]) for row in csv.DictReader(f))",
     "csv.DictReader maps each row to the header names; empty or non-numeric cells will raise ValueError.",
     "csv.DictReader 会把每一行按表头映射成字典；空值或非数字会抛出 ValueError。"),
    ("computes the simple moving average of a list of prices over a window", "计算价格序列在给定窗口上的简单移动平均",
     "def moving_average(prices: list[float], window: int) -> list[float]:\n    return [sum(prices[i - window:i]) / window for i in range(window, len(prices) + 1)]",
     "moving_average([1, 2, 3, 4], 2) returns [1.5, 2.5, 3.5]; the result has len(prices) - window + 1 values.",
     "moving_average([1, 2, 3, 4], 2) 返回 [1.5, 2.5, 3.5]，结果长度为 len(prices) - window + 1。"),
    ("computes compound interest", "计算复利终值",
     "def compound(principal: float, rate: float, years: int, periods_per_year: int = 1) -> float:\n    n = periods_per_year\n    return principal * (1 + rate / n) ** (n * years)",
     "rate is a fraction (0.05 for 5%); compound(1000, 0.05, 10) returns about 1628.89.",
     "rate 用小数表示（5% 写 0.05）；compound(1000, 0.05, 10) 约等于 1628.89。"),
]

_FUNC_Q_EN = ["Write a Python function that {d}.", "Implement a Python function that {d}.",
              "How do I write a function in Python that {d}?", "Python: give me a function that {d}."]
_FUNC_Q_ZH = ["用 Python 写一个函数，{d}。", "请实现一个 Python 函数：{d}。", "Python 怎么写一个{d}的函数？"]


def code_func(rng, en):
    d_en, d_zh, code, x_en, x_zh = rng.choice(_FUNCS)
    if en:
        q = rng.choice(_FUNC_Q_EN).format(d=d_en)
        ans = f"```python\n{code}\n```\n\n{x_en}"
    else:
        q = rng.choice(_FUNC_Q_ZH).format(d=d_zh)
        ans = f"```python\n{code}\n```\n\n{x_zh}"
    fq = fa = None
    if rng.random() < 0.3:
        if en:
            fq, fa = "Can you add a docstring?", f"```python\n{_with_docstring(code, d_en)}\n```"
        else:
            fq, fa = "能加上文档字符串吗？", f"```python\n{_with_docstring(code, d_zh)}\n```"
    reasoning = (f"The user wants a function that {d_en}. A short, idiomatic version plus one example or edge case is enough."
                 if en else f"用户需要一个函数：{d_zh}。写一个简洁的实现，再补充一个示例或边界情况即可。")
    return _Task(q, ans, reasoning=reasoning, followups=[(fq, fa)] if fq else [])


def _with_docstring(code: str, desc: str) -> str:
    lines = code.split("\n")
    i = next(k for k, line in enumerate(lines) if line.startswith("def "))
    doc = desc[0].upper() + desc[1:]
    return "\n".join(lines[: i + 1] + [f'    """{doc}{"." if doc.isascii() else "。"}"""'] + lines[i + 1:])


_WORDS = ["python", "finance", "dividend", "portfolio", "interest", "algorithm", "notebook", "training", "quarter", "balance"]


def code_output(rng, en):
    kind = rng.randrange(5)
    if kind == 0:
        n, k, m = rng.randint(5, 15), rng.randint(2, 5), rng.randint(2, 4)
        code = f"print([x * {k} for x in range({n}) if x % {m} == 0])"
        out = str([x * k for x in range(n) if x % m == 0])
        why = (f"It takes the numbers 0 to {n - 1} that are divisible by {m} and multiplies each by {k}.",
               f"它取出 0 到 {n - 1} 中能被 {m} 整除的数，再分别乘以 {k}。")
    elif kind == 1:
        w = rng.choice(_WORDS)
        i, j = sorted(rng.sample(range(len(w) + 1), 2))
        code = f's = "{w}"\nprint(s[{i}:{j}])'
        out = w[i:j]
        why = (f"s[{i}:{j}] takes the characters at indexes {i} to {j - 1}; the end index is excluded.",
               f"s[{i}:{j}] 取下标 {i} 到 {j - 1} 的字符，不包含结束下标。")
    elif kind == 2:
        nums = [rng.randint(1, 50) for _ in range(rng.randint(3, 6))]
        code = f"nums = {nums}\nprint(sum(nums) / len(nums))"
        out = str(sum(nums) / len(nums))
        why = (f"sum(nums) is {sum(nums)} and len(nums) is {len(nums)}; `/` always returns a float in Python 3.",
               f"sum(nums) 是 {sum(nums)}，len(nums) 是 {len(nums)}；Python 3 中 `/` 总是返回浮点数。")
    elif kind == 3:
        x, y, dflt = rng.randint(1, 99), rng.randint(1, 99), rng.randint(0, 9)
        key = rng.choice(["a", "b", "c"])
        code = f'd = {{"a": {x}, "b": {y}}}\nprint(d.get("{key}", {dflt}))'
        out = str({"a": x, "b": y}.get(key, dflt))
        why = ((f'"{key}" is in the dict, so get returns its value.', f'"{key}" 在字典中，所以 get 返回它的值。')
               if key != "c" else
               ('"c" is not in the dict, so get returns the default.', '"c" 不在字典中，所以 get 返回默认值。'))
    else:
        a, b = rng.sample(_WORDS, 2)
        text = f"  {a.capitalize()} {b.upper()}  "
        code = f'print("{text}".strip().lower().split())'
        out = str(text.strip().lower().split())
        why = ("strip removes the outer spaces, lower lowercases everything, and split breaks on whitespace.",
               "strip 去掉两端空格，lower 转成小写，split 按空白切分。")
    if en:
        q = rng.choice(["What does this Python code print?", "What is the output of the following code?"])
        ans = f"It prints:\n```\n{out}\n```\n{why[0]}"
    else:
        q = rng.choice(["这段 Python 代码输出什么？", "下面的代码运行结果是什么？"])
        ans = f"输出：\n```\n{out}\n```\n{why[1]}"
    code_block = f"```python\n{code}\n```"
    reasoning = f"Trace the code: {why[0]} Output: {out}" if en else f"逐行执行：{why[1]} 输出 {out}。"
    if rng.random() < 0.5:
        return _Task(q, ans, ctx=code_block, reasoning=reasoning)
    return _Task(f"{q}\n\n{code_block}", ans, reasoning=reasoning)


_TABLES = [
    ("employees", "员工", [("salary", "salary", "薪资")], [("department", "department", "部门")], "hire_date"),
    ("orders", "订单", [("amount", "order amount", "订单金额")], [("customer_id", "customer", "客户")], "order_date"),
    ("products", "商品", [("price", "price", "价格"), ("stock", "stock level", "库存")], [("category", "category", "品类")], "created_at"),
    ("transactions", "交易", [("amount", "transaction amount", "交易金额")], [("account_id", "account", "账户")], "created_at"),
    ("loans", "贷款", [("principal", "principal", "本金"), ("interest_rate", "interest rate", "利率")], [("branch", "branch", "网点")], "issued_at"),
]


def code_sql(rng, en):
    table, t_zh, nums, groups, date_col = rng.choice(_TABLES)
    col, c_en, c_zh = rng.choice(nums)
    gcol, g_en, g_zh = rng.choice(groups)
    kind = rng.randrange(4)
    if kind == 0:
        n = rng.randint(3, 20)
        q = (f"Write a SQL query that returns the {n} rows of `{table}` with the highest {c_en}." if en
             else f"写一条 SQL，查询 `{table}`（{t_zh}）表中{c_zh}最高的 {n} 条记录。")
        sql = f"SELECT *\nFROM {table}\nORDER BY {col} DESC\nLIMIT {n};"
        note = ("`ORDER BY ... DESC` sorts from highest to lowest and `LIMIT` keeps the first rows." if en
                else "`ORDER BY ... DESC` 按从高到低排序，`LIMIT` 只保留前几行。")
    elif kind == 1:
        agg = rng.choice([("AVG", "average", "平均"), ("SUM", "total", "总"), ("MAX", "maximum", "最大")])
        q = (f"Write SQL to get the {agg[1]} {c_en} per {g_en} from the `{table}` table." if en
             else f"用 SQL 统计 `{table}` 表中每个{g_zh}的{agg[2]}{c_zh}。")
        alias = f"{agg[1]}_{col}"
        sql = f"SELECT {gcol}, {agg[0]}({col}) AS {alias}\nFROM {table}\nGROUP BY {gcol};"
        note = (f"`GROUP BY {gcol}` makes one row per {g_en}, and {agg[0]} aggregates within each group." if en
                else f"`GROUP BY {gcol}` 让每个{g_zh}一行，{agg[0]} 在组内做聚合。")
    elif kind == 2:
        v = rng.choice([10, 50, 100, 500, 1000, 5000])
        q = (f"How do I count the rows in `{table}` where {col} is greater than {v}?" if en
             else f"SQL 怎么统计 `{table}` 表中 {col} 大于 {v} 的记录数？")
        sql = f"SELECT COUNT(*) AS n\nFROM {table}\nWHERE {col} > {v};"
        note = "Rows with a NULL value are not counted, since NULL > x is not true." if en else "值为 NULL 的行不会被计入，因为 NULL > x 不成立。"
    else:
        y = rng.randint(2018, 2025)
        q = (f"Write a query for the total {c_en} per {g_en} in {y}, using the `{date_col}` column of `{table}`." if en
             else f"写 SQL：按{g_zh}汇总 `{table}` 表中 {y} 年的{c_zh}合计（日期字段为 `{date_col}`）。")
        sql = (f"SELECT {gcol}, SUM({col}) AS total_{col}\nFROM {table}\n"
               f"WHERE {date_col} >= '{y}-01-01' AND {date_col} < '{y + 1}-01-01'\nGROUP BY {gcol}\nORDER BY total_{col} DESC;")
        note = ("A half-open date range works for both DATE and TIMESTAMP columns and can use an index." if en
                else "使用左闭右开的日期区间，对 DATE 和 TIMESTAMP 字段都适用，也能利用索引。")
    return _Task(q, f"```sql\n{sql}\n```\n\n{note}")


_CODE_FAQ = [
    ("Why do I get `TypeError: can only concatenate str (not \"int\") to str`?",
     "Python 报错 `TypeError: can only concatenate str (not \"int\") to str` 是什么原因？",
     "You are adding a string and an integer, e.g. `\"Total: \" + 5`. Python won't convert types implicitly. Convert explicitly with `\"Total: \" + str(5)`, or use an f-string: `f\"Total: {total}\"`.",
     "你在把字符串和整数相加，比如 `\"Total: \" + 5`，Python 不会隐式转换类型。可以显式转换：`\"Total: \" + str(5)`，或者用 f-string：`f\"Total: {total}\"`。"),
    ("What does `IndexError: list index out of range` mean?", "`IndexError: list index out of range` 是什么意思？",
     "You accessed a position that doesn't exist. A list of length n has indexes 0 to n - 1, so `items[len(items)]` fails. Check the length first, or iterate with `for item in items` instead of indexes.",
     "你访问了不存在的下标。长度为 n 的列表下标是 0 到 n - 1，所以 `items[len(items)]` 会出错。先检查长度，或者直接用 `for item in items` 遍历。"),
    ("Why is using a list as a default argument in Python a bad idea?", "为什么 Python 函数不要用列表作为默认参数？",
     "Default values are evaluated once, when the function is defined, so every call shares the same list. Use `None` instead:\n\n```python\ndef add(item, items=None):\n    if items is None:\n        items = []\n    items.append(item)\n    return items\n```",
     "默认值只在函数定义时计算一次，所以每次调用共享同一个列表。应该用 `None` 代替：\n\n```python\ndef add(item, items=None):\n    if items is None:\n        items = []\n    items.append(item)\n    return items\n```"),
    ("How do I undo my last git commit but keep the changes?", "怎么撤销最近一次 git 提交但保留修改？",
     "Run `git reset --soft HEAD~1`. The commit is removed and its changes stay staged. Use `git reset HEAD~1` (mixed) to keep them unstaged instead. Don't do this on commits you've already pushed to a shared branch.",
     "执行 `git reset --soft HEAD~1`，提交会被撤销，改动保留在暂存区。如果想保留在工作区而不暂存，用 `git reset HEAD~1`。已经推送到共享分支的提交不要这样做。"),
    ("How do I create and activate a virtual environment in Python?", "Python 怎么创建并激活虚拟环境？",
     "```bash\npython -m venv .venv\nsource .venv/bin/activate   # Windows: .venv\\Scripts\\activate\n```\nAfter that, `pip install` puts packages into `.venv` instead of the system Python. Run `deactivate` to leave.",
     "```bash\npython -m venv .venv\nsource .venv/bin/activate   # Windows: .venv\\Scripts\\activate\n```\n之后 `pip install` 会把包装到 `.venv` 而不是系统 Python 里。输入 `deactivate` 退出。"),
    ("What's the difference between `==` and `is` in Python?", "Python 里 `==` 和 `is` 有什么区别？",
     "`==` compares values, while `is` checks whether two names refer to the same object. `[1, 2] == [1, 2]` is True but `[1, 2] is [1, 2]` is False. Use `is` only for singletons like `None`.",
     "`==` 比较值是否相等，`is` 判断两个名字是否指向同一个对象。`[1, 2] == [1, 2]` 为 True，而 `[1, 2] is [1, 2]` 为 False。`is` 一般只用于 `None` 这类单例。"),
    ("How can I find which process is using port 8080 on Linux?", "Linux 上怎么查看哪个进程占用了 8080 端口？",
     "Use `sudo lsof -i :8080` or `sudo ss -ltnp | grep 8080`. Both show the process ID and name; then stop it with `kill <PID>` if it's yours.",
     "可以用 `sudo lsof -i :8080` 或 `sudo ss -ltnp | grep 8080`，会显示进程号和进程名；确认是自己的进程后，用 `kill <PID>` 结束它。"),
]


def code_faq(rng, en):
    q_en, q_zh, a_en, a_zh = rng.choice(_CODE_FAQ)
    return _Task(q_en, a_en) if en else _Task(q_zh, a_zh)


# ---------------------------------------------------------------- writing

_TRANSLATIONS = [
    ("The meeting has been moved to Thursday afternoon.", "会议改到了周四下午。"),
    ("Please send me the quarterly report by Friday.", "请在周五之前把季度报告发给我。"),
    ("Our revenue grew by ten percent this year.", "我们今年的收入增长了百分之十。"),
    ("The central bank decided to keep interest rates unchanged.", "央行决定维持利率不变。"),
    ("I would like to open a savings account.", "我想开一个储蓄账户。"),
    ("Thank you for your patience.", "感谢您的耐心等待。"),
    ("The stock market fell sharply today.", "今天股市大幅下跌。"),
    ("Could you explain this invoice to me?", "你能给我解释一下这张发票吗？"),
    ("It is going to rain tomorrow.", "明天要下雨。"),
    ("She has worked at this company for five years.", "她在这家公司工作了五年。"),
    ("Investing always involves some risk.", "投资总是伴随着一定的风险。"),
    ("The train leaves at seven in the morning.", "火车早上七点出发。"),
    ("We need to reduce our operating costs.", "我们需要降低运营成本。"),
    ("This restaurant is famous for its dumplings.", "这家餐厅以饺子闻名。"),
    ("Please keep your password safe.", "请妥善保管您的密码。"),
    ("The project is behind schedule.", "项目进度落后了。"),
    ("How much is the annual fee for this credit card?", "这张信用卡的年费是多少？"),
    ("Reading before bed helps me relax.", "睡前读书能让我放松。"),
    ("The company plans to expand into Southeast Asia.", "公司计划向东南亚扩张。"),
    ("Inflation has eased over the past few months.", "过去几个月通胀有所缓解。"),
    ("Let's review the budget together next week.", "我们下周一起审核一下预算吧。"),
    ("My flight was delayed by two hours.", "我的航班延误了两个小时。"),
    ("He paid off his student loan last year.", "他去年还清了助学贷款。"),
    ("The new policy takes effect next month.", "新政策下个月生效。"),
    ("Exercise is good for both body and mind.", "运动对身心都有好处。"),
    ("The bank approved our loan application.", "银行批准了我们的贷款申请。"),
    ("Please double-check the numbers before submitting.", "提交之前请再核对一遍数字。"),
    ("The museum is closed on Mondays.", "博物馆周一闭馆。"),
]


def write_translate(rng, en):
    (s_en, s_zh), (t_en, t_zh) = rng.sample(_TRANSLATIONS, 2)
    to_zh = rng.random() < 0.5
    src, dst = (s_en, s_zh) if to_zh else (s_zh, s_en)
    nsrc, ndst = (t_en, t_zh) if to_zh else (t_zh, t_en)
    if en:
        instr = rng.choice(["Translate into Chinese:", "How do you say this in Chinese?"] if to_zh
                           else ["Translate into English:", "What does this Chinese sentence mean in English?"])
        fq = f"And this one: {nsrc}"
    else:
        instr = rng.choice(["翻译成中文：", "这句英文用中文怎么说？"] if to_zh else ["请把下面这句话翻译成英文：", "翻译成英文："])
        fq = f"再翻译一句：{nsrc}"
    if rng.random() < 0.4:
        q = ("Translate the following sentence into Chinese." if to_zh else "Translate the following sentence into English.") \
            if en else ("把下面的句子翻译成中文。" if to_zh else "把下面的句子翻译成英文。")
        return _Task(q, dst, ctx=src, followups=[(fq, ndst)])
    q = f"{instr} {src}" if instr.endswith((":", "?")) else f"{instr}{src}"
    return _Task(q, dst, followups=[(fq, ndst)])


_DAYS_EN = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday"]
_DAYS_ZH = ["周一", "周二", "周三", "周四", "周五"]
_RECIPIENTS = [("my manager", "Hi {n},", "经理", "{n}您好："), ("a client", "Dear {n},", "客户", "尊敬的{n}："),
               ("a colleague", "Hi {n},", "同事", "{n}，你好：")]
_SURNAMES_EN = ["Chen", "Smith", "Patel", "Garcia", "Müller", "Kim", "Johnson", "Rossi"]
_SURNAMES_ZH = ["王", "李", "张", "刘", "陈", "杨", "赵", "周"]


def write_email(rng, en):
    r_en, greet_en, r_zh, greet_zh = rng.choice(_RECIPIENTS)
    purpose = rng.randrange(4)
    d1, d2 = rng.sample(range(5), 2)
    hour = rng.choice([9, 10, 11, 14, 15, 16])
    inv, amt = rng.randint(1000, 9999), rng.randrange(500, 50001, 50)
    days = rng.randint(2, 7)
    topic_en = rng.choice(["the Q3 budget", "the vendor contract", "the product launch plan", "the audit findings"])
    topic_zh = {"the Q3 budget": "第三季度预算", "the vendor contract": "供应商合同", "the product launch plan": "产品发布计划",
                "the audit findings": "审计发现的问题"}[topic_en]
    if en:
        name = f"{rng.choice(['Mr.', 'Ms.'])} {rng.choice(_SURNAMES_EN)}" if greet_en.startswith("Dear") else rng.choice(_NAMES_EN)
        greet = greet_en.format(n=name)
        if purpose == 0:
            q = f"Write a short email to {r_en} asking to move our meeting about {topic_en} from {_DAYS_EN[d1]} to {_DAYS_EN[d2]}."
            body = (f"Would it be possible to move our meeting about {topic_en} from {_DAYS_EN[d1]} to {_DAYS_EN[d2]}? "
                    f"Something came up on {_DAYS_EN[d1]} that I can't reschedule. I'm free any time on {_DAYS_EN[d2]} "
                    f"after {hour if hour <= 12 else hour - 12} {'am' if hour < 12 else 'pm'}, but I'm happy to work around your calendar.")
            subj = f"Rescheduling our {_DAYS_EN[d1]} meeting"
        elif purpose == 1:
            q = f"Write a polite email to {r_en} following up on unpaid invoice #{inv} for ${amt:,}."
            body = (f"I'm following up on invoice #{inv} for ${amt:,}, which is now past due. Could you let me know "
                    "when we can expect payment? If it has already been sent, please disregard this note. "
                    "I've attached a copy of the invoice for reference.")
            subj = f"Invoice #{inv}: payment reminder"
        elif purpose == 2:
            q = f"Draft an email to {r_en} asking for a {days}-day extension on the report about {topic_en}."
            body = (f"I'm writing to ask for a {days}-day extension on the report about {topic_en}. Some of the data "
                    "I need arrived later than expected, and I want to make sure the analysis is accurate. "
                    f"I can share a draft of the finished sections by {_DAYS_EN[d2]} if that helps.")
            subj = "Request for a short extension"
        else:
            q = f"Write a brief thank-you email to {r_en} after our meeting about {topic_en}."
            body = (f"Thank you for taking the time to meet about {topic_en}. Your input was very helpful, "
                    f"and I'll send a summary of the next steps by {_DAYS_EN[d2]}. Please let me know if I missed anything.")
            subj = "Thanks for today's meeting"
        sign = rng.choice(["Best regards,", "Thanks,", "Kind regards,"])
        ans = f"Subject: {subj}\n\n{greet}\n\n{body}\n\n{sign}\n[Your name]"
    else:
        name = rng.choice(_SURNAMES_ZH) + rng.choice(["经理", "总", "老师"]) if r_zh != "同事" else rng.choice(_NAMES_ZH)
        greet = greet_zh.format(n=name)
        if purpose == 0:
            q = f"帮我写一封简短的邮件给{r_zh}，把关于{topic_zh}的会议从{_DAYS_ZH[d1]}改到{_DAYS_ZH[d2]}。"
            body = (f"原定{_DAYS_ZH[d1]}讨论{topic_zh}的会议，我这边临时有事无法参加，想改到{_DAYS_ZH[d2]}，"
                    f"当天{hour}点以后我都有空。如果您时间不方便，我也可以配合您的安排。")
            subj = "会议时间调整"
        elif purpose == 1:
            q = f"写一封礼貌的邮件给{r_zh}，催收编号{inv}、金额{amt:,}元的逾期发票。"
            body = (f"编号为{inv}、金额{amt:,}元的发票目前已逾期，想跟您确认一下预计的付款时间。"
                    "如果款项已经支付，请忽略本邮件。发票副本附后，供您参考。")
            subj = f"发票{inv}付款提醒"
        elif purpose == 2:
            q = f"帮我起草一封邮件给{r_zh}，申请把{topic_zh}报告的截止时间延后{days}天。"
            body = (f"关于{topic_zh}的报告，想申请延期{days}天提交。部分数据比预期晚到，我希望确保分析准确无误。"
                    f"如有需要，我可以在{_DAYS_ZH[d2]}先提供已完成部分的初稿。")
            subj = "报告延期申请"
        else:
            q = f"写一封简短的感谢邮件给{r_zh}，感谢对方参加关于{topic_zh}的会议。"
            body = f"感谢您抽出时间讨论{topic_zh}，您的意见对我们很有帮助。我会在{_DAYS_ZH[d2]}之前把后续安排整理发给您，如有遗漏请随时告诉我。"
            subj = "会议致谢"
        sign = rng.choice(["此致\n敬礼！", "谢谢！", "祝好！"])
        ans = f"主题：{subj}\n\n{greet}\n\n{body}\n\n{sign}\n[你的名字]"
    return _Task(q, ans)


_FORMAL = [
    ("Hey, can u send me the file asap?", "Could you please send me the file at your earliest convenience?"),
    ("We messed up the numbers in the report.", "We identified errors in the figures presented in the report."),
    ("I can't make it to the meeting tomorrow, sorry.", "Unfortunately, I will be unable to attend tomorrow's meeting. I apologize for any inconvenience."),
    ("The new system is way better than the old one.", "The new system offers significant improvements over the previous one."),
    ("Let me know what you think.", "I would appreciate your feedback."),
    ("We need more money for this project.", "This project will require additional funding."),
    ("Sales were kind of bad last quarter.", "Sales performance was below expectations last quarter."),
    ("Thanks a lot for helping out!", "Thank you very much for your assistance."),
]
_FORMAL_ZH = [
    ("这事儿你赶紧弄一下。", "请您尽快处理此事。"),
    ("报告里的数搞错了。", "报告中的数据存在错误，我们正在核实更正。"),
    ("明天的会我去不了，不好意思。", "很抱歉，我明天无法出席会议，敬请谅解。"),
    ("新系统比老的好用多了。", "新系统相比原有系统有了显著改进。"),
    ("上个季度卖得不太行。", "上季度销售业绩未达预期。"),
    ("这个项目还得再加点钱。", "该项目需要追加预算。"),
    ("有啥想法跟我说一声。", "如有任何意见或建议，欢迎随时与我联系。"),
]


def write_formal(rng, en):
    if en:
        src, dst = rng.choice(_FORMAL)
        q = rng.choice(["Rewrite this sentence in a more formal tone:", "Make this more professional:", "Rephrase this for a business email:"])
    else:
        src, dst = rng.choice(_FORMAL_ZH)
        q = rng.choice(["把这句话改得更正式一些：", "请把下面的话改写成商务书面语：", "润色成正式的表达："])
    if rng.random() < 0.5:
        return _Task(q.rstrip(":：") + ("." if en else "。"), dst, ctx=src)
    return _Task(f"{q} {src}" if en else f"{q}{src}", dst)


_TEAMS = [("marketing", "市场部"), ("finance", "财务部"), ("engineering", "技术部"), ("sales", "销售部"), ("risk", "风控部")]
_DECISIONS = [
    ("launch the spring campaign on {d}", "于{d}启动春季推广活动"),
    ("freeze new hiring until the budget review", "在预算审核完成前暂停新增招聘"),
    ("switch the payroll provider next quarter", "下季度更换薪资服务商"),
    ("move the weekly sync to {d}", "把周例会改到{d}"),
    ("increase the travel budget by {p}%", "将差旅预算提高{p}%"),
    ("retire the legacy reporting dashboard", "下线旧版报表看板"),
    ("run a customer survey before {d}", "在{d}前完成一次客户调研"),
]


def write_notes(rng, en):
    t_en, t_zh = rng.choice(_TEAMS)
    picks = rng.sample(_DECISIONS, rng.randint(2, 3))
    p = rng.choice([5, 10, 15, 20])
    m, dd = rng.randint(1, 12), rng.randint(1, 28)
    d_en = f"{_MONTHS[m - 1]} {dd}"
    d_zh = f"{m}月{dd}日"
    owners = rng.sample(_NAMES_EN if en else _NAMES_ZH, len(picks))
    if en:
        items = [f"{o}: {dec[0].format(d=d_en, p=p)}" for o, dec in zip(owners, picks)]
        ctx = (f"Notes, {t_en} team meeting\n- Attendees: {', '.join(owners)}\n- Discussed: " + "; ".join(
            f"{o} proposed to {dec[0].format(d=d_en, p=p)}" for o, dec in zip(owners, picks))
               + "\n- All proposals approved; owners to report back next week.")
        q = rng.choice(["Summarize these meeting notes as action items.", "Turn these notes into a short list of action items with owners."])
        ans = "Action items:\n" + "\n".join(f"{i}. {it[0].upper() + it[1:]}" for i, it in enumerate(items, 1)) \
              + "\n\nEveryone reports back at next week's meeting."
    else:
        items = [f"{o}：{dec[1].format(d=d_zh, p=p)}" for o, dec in zip(owners, picks)]
        ctx = (f"{t_zh}会议纪要\n- 参会人：{'、'.join(owners)}\n- 讨论内容：" + "；".join(
            f"{o}提议{dec[1].format(d=d_zh, p=p)}" for o, dec in zip(owners, picks)) + "\n- 以上提议均获通过，负责人下周汇报进展。")
        q = rng.choice(["把这份会议纪要整理成待办事项。", "根据下面的纪要，列出每项任务和负责人。"])
        ans = "待办事项：\n" + "\n".join(f"{i}. {it}" for i, it in enumerate(items, 1)) + "\n\n各负责人在下周会议上汇报进展。"
    return _Task(q, ans, ctx=ctx)


# ---------------------------------------------------------------- general knowledge

_CAPITALS = [
    ("France", "Paris", "法国", "巴黎"), ("Japan", "Tokyo", "日本", "东京"), ("Germany", "Berlin", "德国", "柏林"),
    ("Italy", "Rome", "意大利", "罗马"), ("Spain", "Madrid", "西班牙", "马德里"), ("Canada", "Ottawa", "加拿大", "渥太华"),
    ("Australia", "Canberra", "澳大利亚", "堪培拉"), ("Brazil", "Brasília", "巴西", "巴西利亚"),
    ("Egypt", "Cairo", "埃及", "开罗"), ("India", "New Delhi", "印度", "新德里"), ("Russia", "Moscow", "俄罗斯", "莫斯科"),
    ("South Korea", "Seoul", "韩国", "首尔"), ("Mexico", "Mexico City", "墨西哥", "墨西哥城"),
    ("Argentina", "Buenos Aires", "阿根廷", "布宜诺斯艾利斯"), ("Kenya", "Nairobi", "肯尼亚", "内罗毕"),
    ("Turkey", "Ankara", "土耳其", "安卡拉"), ("Thailand", "Bangkok", "泰国", "曼谷"), ("Vietnam", "Hanoi", "越南", "河内"),
    ("Norway", "Oslo", "挪威", "奥斯陆"), ("Sweden", "Stockholm", "瑞典", "斯德哥尔摩"), ("Poland", "Warsaw", "波兰", "华沙"),
    ("Portugal", "Lisbon", "葡萄牙", "里斯本"), ("Greece", "Athens", "希腊", "雅典"), ("New Zealand", "Wellington", "新西兰", "惠灵顿"),
    ("Switzerland", "Bern", "瑞士", "伯尔尼"), ("Indonesia", "Jakarta", "印度尼西亚", "雅加达"),
]


def gen_capital(rng, en):
    c_en, cap_en, c_zh, cap_zh = rng.choice(_CAPITALS)
    if en:
        q = rng.choice([f"What is the capital of {c_en}?", f"Which city is the capital of {c_en}?", f"Name the capital city of {c_en}."])
        ans = rng.choice([f"The capital of {c_en} is {cap_en}.", f"{cap_en} is the capital of {c_en}."])
    else:
        q = rng.choice([f"{c_zh}的首都是哪里？", f"{c_zh}的首都是哪座城市？", f"请问{c_zh}首都叫什么？"])
        ans = rng.choice([f"{c_zh}的首都是{cap_zh}。", f"是{cap_zh}。"])
    (o_en, ocap_en, o_zh, ocap_zh) = rng.choice([c for c in _CAPITALS if c[0] != c_en])
    fq, fa = ((f"And {o_en}?", f"The capital of {o_en} is {ocap_en}.") if en else (f"那{o_zh}呢？", f"{o_zh}的首都是{ocap_zh}。"))
    return _Task(q, ans, followups=[(fq, fa)])


_UNITS = [  # (en from, en to, zh from, zh to, factor or None for temperature)
    ("kilometers", "miles", "千米", "英里", 1 / 1.609344),
    ("miles", "kilometers", "英里", "千米", 1.609344),
    ("kilograms", "pounds", "千克", "磅", 2.2046226),
    ("pounds", "kilograms", "磅", "千克", 0.45359237),
    ("meters", "feet", "米", "英尺", 3.2808399),
    ("liters", "US gallons", "升", "美制加仑", 0.26417205),
    ("degrees Celsius", "degrees Fahrenheit", "摄氏度", "华氏度", None),
    ("degrees Fahrenheit", "degrees Celsius", "华氏度", "摄氏度", None),
]


def gen_units(rng, en):
    f_en, t_en, f_zh, t_zh, k = rng.choice(_UNITS)
    if k is None:
        if f_en.endswith("Celsius"):
            x = rng.randint(-30, 45)
            y, how = x * 9 / 5 + 32, f"°F = °C × 9/5 + 32 = {x} × 9/5 + 32"
        else:
            x = rng.randint(-10, 110)
            y, how = (x - 32) * 5 / 9, f"°C = (°F - 32) × 5/9 = ({x} - 32) × 5/9"
        ans_en, ans_zh = f"{how} = {_num(y, 1)}.", f"{how} = {_num(y, 1)}。"
    else:
        x = rng.choice([rng.randint(1, 100), rng.randint(100, 5000), rng.randint(1, 40) / 2])
        y = x * k
        ans_en = f"{_num(x)} {f_en} × {k:.6g} ≈ {_num(y)} {t_en}."
        ans_zh = f"{_num(x)}{f_zh} × {k:.6g} ≈ {_num(y)}{t_zh}。"
    if en:
        q = rng.choice([f"Convert {_num(x)} {f_en} to {t_en}.", f"How many {t_en} is {_num(x)} {f_en}?"])
        return _Task(q, ans_en)
    q = rng.choice([f"{_num(x)}{f_zh}等于多少{t_zh}？", f"把{_num(x)}{f_zh}换算成{t_zh}。"])
    return _Task(q, ans_zh)


_WEEKDAYS_EN = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
_WEEKDAYS_ZH = ["星期一", "星期二", "星期三", "星期四", "星期五", "星期六", "星期日"]


def gen_calendar(rng, en):
    kind = rng.randrange(3)
    d = _dt.date(2000, 1, 1) + _dt.timedelta(days=rng.randint(0, 365 * 30))
    if kind == 0:
        wd = d.weekday()
        if en:
            return _Task(f"What day of the week was {_MONTHS[d.month - 1]} {d.day}, {d.year}?",
                         f"{_MONTHS[d.month - 1]} {d.day}, {d.year} was a {_WEEKDAYS_EN[wd]}.")
        return _Task(f"{d.year}年{d.month}月{d.day}日是星期几？", f"{d.year}年{d.month}月{d.day}日是{_WEEKDAYS_ZH[wd]}。")
    if kind == 1:
        e = d + _dt.timedelta(days=rng.randint(1, 400))
        n = (e - d).days
        if en:
            return _Task(f"How many days are there between {d.isoformat()} and {e.isoformat()}?",
                         f"There are {n} days from {d.isoformat()} to {e.isoformat()} (counting the end date but not the start date).")
        return _Task(f"{d.isoformat()} 到 {e.isoformat()} 之间相隔多少天？", f"相隔{n}天（不含起始日，含结束日）。")
    y = rng.randint(1890, 2100)
    leap = y % 4 == 0 and (y % 100 != 0 or y % 400 == 0)
    rule_en = ("divisible by 400" if y % 400 == 0 else "divisible by 100 but not by 400" if y % 100 == 0
               else "divisible by 4 and not by 100" if y % 4 == 0 else "not divisible by 4")
    rule_zh = ("能被400整除" if y % 400 == 0 else "能被100整除但不能被400整除" if y % 100 == 0
               else "能被4整除且不能被100整除" if y % 4 == 0 else "不能被4整除")
    if en:
        return _Task(f"Is {y} a leap year?", f"{'Yes' if leap else 'No'}. {y} is {rule_en}, so it {'is' if leap else 'is not'} a leap year.",
                     reasoning=f"Leap years: divisible by 4, except centuries not divisible by 400. {y} is {rule_en}.")
    return _Task(f"{y}年是闰年吗？", f"{'是' if leap else '不是'}。{y}{rule_zh}，所以{'是' if leap else '不是'}闰年。",
                 reasoning=f"闰年规则：能被4整除但不能被100整除，或能被400整除。{y}{rule_zh}。")


_SCIENCE = [
    ("why the sky is blue", "天空为什么是蓝色的",
     "Sunlight contains all colors. When it passes through the atmosphere, air molecules scatter short wavelengths (blue) much more than long ones (red). This is called Rayleigh scattering, so blue light reaches our eyes from every direction of the sky.",
     "阳光包含各种颜色的光。穿过大气时，空气分子对波长较短的蓝光散射得比红光强得多，这叫瑞利散射。所以从天空各个方向进入我们眼睛的主要是蓝光。"),
    ("photosynthesis", "光合作用",
     "Photosynthesis is how plants, algae and some bacteria turn light into chemical energy. Using sunlight, they combine carbon dioxide and water into glucose and release oxygen: 6CO₂ + 6H₂O → C₆H₁₂O₆ + 6O₂.",
     "光合作用是植物、藻类和部分细菌把光能转化为化学能的过程：利用阳光，把二氧化碳和水合成葡萄糖，同时释放氧气，即 6CO₂ + 6H₂O → C₆H₁₂O₆ + 6O₂。"),
    ("what causes the seasons", "四季是怎么形成的",
     "Seasons come from the tilt of Earth's axis, about 23.4°. As Earth orbits the Sun, each hemisphere takes turns leaning toward it, getting more direct sunlight and longer days in summer. Distance from the Sun is not the cause.",
     "四季是因为地轴倾斜约23.4°。地球绕太阳公转时，南北半球轮流朝向太阳，朝向太阳的一侧阳光更直射、白天更长，就是夏季。季节并不是由日地距离决定的。"),
    ("how vaccines work", "疫苗是怎么起作用的",
     "A vaccine shows your immune system a harmless piece or version of a pathogen. Your body learns to recognize it and makes memory cells, so if the real pathogen appears later, the immune response is faster and stronger.",
     "疫苗让免疫系统接触病原体的无害成分或减毒形式，身体因此学会识别它并产生记忆细胞。以后真正的病原体入侵时，免疫反应会更快、更强。"),
    ("why ice floats on water", "冰为什么能浮在水面上",
     "When water freezes, its molecules lock into a hexagonal crystal with more space between them, so ice is about 9% less dense than liquid water. Anything less dense than the liquid around it floats.",
     "水结冰时，分子排列成六边形晶格，分子间空隙变大，所以冰的密度比液态水小约9%。密度比周围液体小的物体就会浮起来。"),
    ("what a black hole is", "黑洞是什么",
     "A black hole is a region where gravity is so strong that nothing, not even light, can escape once it crosses the boundary called the event horizon. Most form when very massive stars collapse at the end of their lives.",
     "黑洞是引力极强的区域，任何东西一旦越过它的边界（事件视界），连光都无法逃脱。大多数黑洞是大质量恒星在生命末期坍缩形成的。"),
    ("why we have tides", "潮汐是怎么产生的",
     "Tides are caused mainly by the Moon's gravity pulling unevenly on Earth: water bulges toward the Moon on the near side and away from it on the far side. As Earth rotates, most coasts pass through two high tides a day.",
     "潮汐主要由月球引力对地球各处作用不均造成：靠近月球的一侧海水隆起，背对月球的一侧也会隆起。地球自转时，多数海岸每天经历两次涨潮。"),
]

_SCI_Q_EN = ["Explain {x}.", "Can you explain {x} to a ten-year-old?", "In a few sentences, explain {x}."]
_SCI_Q_ZH = ["{x}？", "请解释一下{x}。", "能用简单的话给孩子讲讲{x}吗？"]


def gen_science(rng, en):
    return _concept(rng, en, _SCIENCE, _SCI_Q_EN, _SCI_Q_ZH)


_TIPS = [
    ("sleep better", "提高睡眠质量",
     "1. Keep a regular schedule, even on weekends.\n2. Avoid caffeine after early afternoon.\n3. Keep the bedroom dark, quiet and cool.\n4. Put screens away 30-60 minutes before bed.\n5. Get daylight and exercise during the day.",
     "1. 保持规律作息，周末也尽量固定时间。\n2. 午后避免摄入咖啡因。\n3. 卧室保持黑暗、安静、凉爽。\n4. 睡前30到60分钟放下手机等屏幕。\n5. 白天多晒太阳、适量运动。"),
    ("build an emergency fund", "建立应急基金",
     "1. Aim for 3-6 months of essential expenses.\n2. Keep it in a separate, easily accessible savings account.\n3. Automate a fixed transfer on payday.\n4. Start small: even $500 covers many surprises.\n5. Refill it after you use it.",
     "1. 目标是覆盖3到6个月的必要开支。\n2. 存在单独、随时可取的账户里。\n3. 发工资当天自动转入固定金额。\n4. 从小额开始，几千元也能应付不少突发情况。\n5. 用掉之后要及时补上。"),
    ("prepare for a job interview", "准备面试",
     "1. Research the company and the role.\n2. Prepare short stories that show your results (situation, action, result).\n3. Practice common questions out loud.\n4. Prepare two or three questions to ask them.\n5. Plan your route or test your video setup in advance.",
     "1. 了解公司和岗位要求。\n2. 准备几个能体现成果的具体事例（情境、行动、结果）。\n3. 大声练习常见问题。\n4. 准备两三个想问面试官的问题。\n5. 提前规划路线或调试好视频设备。"),
    ("stick to a monthly budget", "坚持每月预算",
     "1. Track every expense for a month to see where money goes.\n2. Set limits per category (rent, food, transport, fun).\n3. Pay yourself first: move savings out on payday.\n4. Use cash or a separate card for flexible spending.\n5. Review and adjust at the end of each month.",
     "1. 先记一个月账，弄清钱花在哪里。\n2. 给房租、餐饮、交通、娱乐等类别设上限。\n3. 先储蓄后消费：发工资当天先转出储蓄。\n4. 弹性开支用单独的卡或现金。\n5. 每月底复盘并调整。"),
    ("learn a new language", "学习一门新语言",
     "1. Study a little every day rather than a lot once a week.\n2. Learn the most common words first.\n3. Use spaced-repetition flashcards.\n4. Listen to native content you enjoy.\n5. Speak early, even with mistakes.",
     "1. 每天学一点，比每周集中学一次效果好。\n2. 先掌握最常用的词汇。\n3. 用间隔重复的单词卡复习。\n4. 多听自己感兴趣的母语内容。\n5. 尽早开口，不要怕犯错。"),
]
_TIP_Q_EN = ["How can I {x}?", "Give me some tips to {x}.", "What are a few practical ways to {x}?"]
_TIP_Q_ZH = ["怎样{x}？", "给我一些{x}的建议。", "有哪些实用的方法可以{x}？"]


def gen_tips(rng, en):
    return _concept(rng, en, _TIPS, _TIP_Q_EN, _TIP_Q_ZH)


# ---------------------------------------------------------------- registry

# domain -> [(weight, generator)]; each generator(rng, en: bool) -> _Task
_GENERATORS = {
    "finance": [(3, fin_growth), (2, fin_margin), (2, fin_compound), (2, fin_loan), (2, fin_ratios), (2, fin_pe),
                (1, fin_fx), (2, fin_earnings), (2, fin_sentiment), (2, fin_concept)],
    "math": [(3, math_arith), (2, math_expr), (2, math_word), (1, math_percent), (2, math_equation), (1, math_geometry),
             (1, math_stats)],
    "coding": [(3, code_func), (2, code_output), (2, code_sql), (1, code_faq)],
    "writing": [(3, write_translate), (2, write_email), (1, write_formal), (1, write_notes)],
    "general": [(1, gen_capital), (2, gen_units), (2, gen_calendar), (1, gen_science), (1, gen_tips)],
}
DOMAINS = tuple(_GENERATORS)
_DOMAIN_WEIGHTS = {"finance": 30, "math": 20, "coding": 20, "writing": 15, "general": 15}

_SYSTEM = {
    "finance": (["You are a financial analyst assistant. Show your calculations and keep answers concise.",
                 "You are a helpful assistant for a bank's customer-facing team. Be accurate and clear.",
                 "You are an investment research assistant. Explain financial concepts plainly and do not give personalized investment advice."],
                ["你是一名金融分析助手，回答要简洁，并给出计算过程。", "你是银行客服团队的智能助手，回答需准确、清晰。",
                 "你是投研助手，用通俗的语言解释金融概念，不提供个性化投资建议。"]),
    "math": (["You are a patient math tutor. Explain each step.", "You are a calculator assistant. Give the result with brief working."],
             ["你是一位耐心的数学老师，请讲清每一步。", "你是计算助手，给出结果并附上简要步骤。"]),
    "coding": (["You are a senior Python developer. Answer with working code and a short explanation.",
                "You are a coding assistant. Prefer simple, readable solutions."],
               ["你是一名资深 Python 工程师，回答时给出可运行的代码和简短说明。", "你是编程助手，优先给出简单易读的方案。"]),
    "writing": (["You are a professional writing assistant. Keep the tone clear and polite.",
                 "You are a bilingual English-Chinese translator and editor."],
                ["你是专业的写作助手，语气清晰得体。", "你是中英双语翻译和编辑。"]),
    "general": (["You are a knowledgeable assistant. Answer briefly and accurately."],
                ["你是一个知识渊博的助手，回答简洁准确。"]),
}
_GENERIC_SYSTEM = (["You are a helpful assistant.", "You are Qwen, a helpful and harmless assistant."],
                   ["你是一个乐于助人的助手。", "你是一个有帮助的 AI 助手，请用中文回答。"])
_THANKS = ([("Thanks!", "You're welcome! Let me know if you need anything else."),
            ("Great, that's what I needed.", "Glad it helped!"), ("Thank you, very clear.", "You're welcome!")],
           [("谢谢！", "不客气，还有问题随时问我。"), ("明白了，多谢。", "不客气！"), ("好的，很清楚，谢谢。", "很高兴能帮到你！")])


def _task(rng: random.Random, domain: str, en: bool) -> _Task:
    weights, gens = zip(*_GENERATORS[domain])
    return rng.choices(gens, weights)[0](rng, en)


def _user_text(rng, task: _Task) -> str:
    if not task.ctx:
        return task.q
    return f"{task.q}\n\n{task.ctx}" if rng.random() < 0.7 else f"{task.ctx}\n\n{task.q}"


def _system(rng, domain, en) -> str:
    pool = _SYSTEM[domain] if rng.random() < 0.7 else _GENERIC_SYSTEM
    return rng.choice(pool[0] if en else pool[1])


def _alpaca(rng, task: _Task, domain: str, en: bool) -> dict:
    row = {"instruction": task.q, "input": task.ctx, "output": task.a}
    if rng.random() < 0.25:
        row["system"] = _system(rng, domain, en)
    if task.followups and rng.random() < 0.2:
        # The follow-up becomes the instruction; the first exchange becomes history.
        fq, fa = task.followups[0]
        row.update(instruction=fq, input="", output=fa)
        row["history"] = [[_user_text(rng, task), task.a]]
    elif rng.random() < 0.12:
        earlier = [_task(rng, rng.choice(DOMAINS) if rng.random() < 0.3 else domain, en) for _ in range(rng.randint(1, 2))]
        row["history"] = [[_user_text(rng, t), t.a] for t in earlier]
    return row


def _messages(rng, task: _Task, domain: str, en: bool) -> dict:
    msgs = []
    if rng.random() < 0.4:
        msgs.append({"role": "system", "content": _system(rng, domain, en)})
    turns = [(_user_text(rng, task), task.a, task.reasoning)]
    for fq, fa in task.followups:
        if rng.random() < 0.45:
            turns.append((fq, fa, None))
    while len(turns) < 4 and rng.random() < 0.25:
        nxt = _task(rng, domain, en)
        turns.append((_user_text(rng, nxt), nxt.a, nxt.reasoning))
    if len(turns) > 1 and rng.random() < 0.15:
        turns.append((*rng.choice(_THANKS[0] if en else _THANKS[1]), None))
    for i, (u, a, reasoning) in enumerate(turns):
        msgs.append({"role": "user", "content": u})
        reply = {"role": "assistant", "content": a}
        # Thinking-mode data: reasoning on the final assistant turn (Qwen3 drops it from earlier turns).
        if i == len(turns) - 1 and reasoning and rng.random() < 0.35:
            reply["reasoning_content"] = reasoning
        msgs.append(reply)
    return {"messages": msgs}


def _reasoning_row(rng, task: _Task, domain: str, en: bool) -> dict:
    """A messages row whose reply carries the task's worked reasoning (data for thinking models)."""
    msgs = [{"role": "system", "content": _system(rng, domain, en)}] if rng.random() < 0.25 else []
    msgs += [{"role": "user", "content": _user_text(rng, task)},
             {"role": "assistant", "content": task.a, "reasoning_content": task.reasoning}]
    return {"messages": msgs}


# ---------------------------------------------------------------- tool calls

TOOL_SHARE = 0.1  # of the rows: a tool-calling conversation (messages rows with `tools` and `tool_calls`)
_CURRENCIES = {"USD": 1.0, "EUR": 0.9213, "GBP": 0.7871, "JPY": 151.37, "CNY": 7.2418, "HKD": 7.8125}
_TICKERS = {"ACME": 182.40, "GLOBX": 57.15, "NOVA": 311.92, "ZENIT": 24.63, "ORBIT": 96.08}
_CITIES = [("Paris", "巴黎"), ("Tokyo", "东京"), ("New York", "纽约"), ("Shanghai", "上海"), ("London", "伦敦")]


def _tool(name: str, description: str, properties: dict, required: list[str]) -> dict:
    return {"type": "function", "function": {"name": name, "description": description, "parameters": {
        "type": "object", "properties": properties, "required": required}}}


TOOLS = {
    "get_exchange_rate": _tool("get_exchange_rate", "Current exchange rate: units of quote currency per unit of base.",
                               {"base": {"type": "string", "description": "ISO code, e.g. USD"},
                                "quote": {"type": "string", "description": "ISO code, e.g. EUR"}}, ["base", "quote"]),
    "get_stock_quote": _tool("get_stock_quote", "Latest price of a listed stock, in USD, and today's change in percent.",
                             {"ticker": {"type": "string"}}, ["ticker"]),
    "loan_payment": _tool("loan_payment", "Monthly payment of a fixed-rate amortizing loan.",
                          {"principal": {"type": "number"}, "annual_rate_pct": {"type": "number"},
                           "years": {"type": "integer"}}, ["principal", "annual_rate_pct", "years"]),
    "get_weather": _tool("get_weather", "Current weather in a city.",
                         {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
                         ["city"]),
}


def _call(rng, name: str, args: dict) -> dict:
    # Arguments as an object, or (as OpenAI's API sends them) a string holding the JSON object: both are read alike.
    return {"type": "function", "function": {"name": name, "arguments": json.dumps(args, ensure_ascii=False)
                                             if rng.random() < 0.3 else args}}


def _result(value: dict) -> dict:
    return {"role": "tool", "content": json.dumps(value, ensure_ascii=False)}


def _tool_fx(rng, en):
    """One call, or two in one turn (two target currencies)."""
    base = rng.choice(["USD", "EUR", "GBP", "CNY"])
    quotes = rng.sample([c for c in _CURRENCIES if c != base], rng.choice([1, 2]))
    amount = rng.choice([50, 120, 250, 1000, 3600, 15000])
    rates = {q: round(_CURRENCIES[q] / _CURRENCIES[base], 4) for q in quotes}
    names = " and ".join(quotes) if en else "和".join(quotes)
    q = f"How much is {amount:,} {base} in {names} right now?" if en else f"{amount:,} {base} 现在能换多少{names}？"
    calls = [_call(rng, "get_exchange_rate", {"base": base, "quote": c}) for c in quotes]
    results = [_result({"base": base, "quote": c, "rate": rates[c]}) for c in quotes]
    parts = [f"{amount * rates[c]:,.2f} {c} (rate {rates[c]})" for c in quotes]
    a = (f"{amount:,} {base} is about " + " and ".join(parts) + ".") if en else \
        (f"{amount:,} {base} 约合" + "，或".join(parts) + "。")
    why = f"Multiply {amount} by each rate." if en else f"用 {amount} 乘以各自的汇率。"
    return q, [(calls, results)], a, why, ["get_exchange_rate"]


def _tool_stock(rng, en):
    """Two steps: the quote, then (for a holding in another currency) the exchange rate."""
    ticker, price = rng.choice(list(_TICKERS.items()))
    change = round(rng.uniform(-3, 3), 2)
    shares = rng.choice([10, 25, 40, 100, 150])
    steps = [([_call(rng, "get_stock_quote", {"ticker": ticker})],
              [_result({"ticker": ticker, "price": price, "currency": "USD", "change_pct": change})])]
    value = shares * price
    cur = rng.choice(["USD", "EUR", "CNY"])
    if cur == "USD":
        q = f"I hold {shares} shares of {ticker}. What are they worth today?" if en else f"我持有 {shares} 股 {ticker}，今天市值多少？"
        a = (f"{ticker} trades at {price:.2f} USD ({change:+.2f}% today), so {shares} shares are worth {value:,.2f} USD."
             if en else f"{ticker} 现价 {price:.2f} 美元（今日 {change:+.2f}%），{shares} 股市值 {value:,.2f} 美元。")
        return q, steps, a, f"{shares} x {price} = {value:.2f}", ["get_stock_quote"]
    rate = _CURRENCIES[cur]
    steps.append(([_call(rng, "get_exchange_rate", {"base": "USD", "quote": cur})],
                  [_result({"base": "USD", "quote": cur, "rate": rate})]))
    q = (f"What are my {shares} {ticker} shares worth in {cur}?" if en else f"我的 {shares} 股 {ticker} 折合多少{cur}？")
    a = (f"{ticker} is at {price:.2f} USD, so {shares} shares are {value:,.2f} USD, about {value * rate:,.2f} {cur} at "
         f"{rate} {cur} per USD." if en else
         f"{ticker} 现价 {price:.2f} 美元，{shares} 股合 {value:,.2f} 美元，按 1 美元 = {rate} {cur} 约合 {value * rate:,.2f} {cur}。")
    return q, steps, a, f"{shares} x {price} = {value:.2f} USD; x {rate} = {value * rate:.2f} {cur}", \
        ["get_stock_quote", "get_exchange_rate"]


def _tool_loan(rng, en):
    p, rate, years = rng.choice([100000, 250000, 400000]), rng.choice([3.5, 4.2, 5.0, 6.1]), rng.choice([10, 15, 20, 30])
    i, n = rate / 1200, years * 12
    pay = round(p * i / (1 - (1 + i) ** -n), 2)
    args = {"principal": p, "annual_rate_pct": rate, "years": years}
    q = (f"What would the monthly payment be on a {p:,} loan at {rate}% over {years} years?" if en else
         f"贷款 {p:,} 元，年利率 {rate}%，{years} 年等额本息，每月还多少？")
    a = (f"About {pay:,.2f} per month, {pay * n:,.2f} in total over {n} payments." if en else
         f"每月约 {pay:,.2f} 元，{n} 期共还 {pay * n:,.2f} 元。")
    return q, [([_call(rng, "loan_payment", args)], [_result({"monthly_payment": pay, "payments": n})])], a, \
        f"{pay} x {n} = {pay * n:.2f}", ["loan_payment"]


def _tool_weather(rng, en):
    city_en, city_zh = rng.choice(_CITIES)
    temp, sky = rng.randint(-5, 33), rng.choice([("sunny", "晴"), ("cloudy", "多云"), ("light rain", "小雨")])
    q = f"What's the weather like in {city_en}?" if en else f"{city_zh}现在天气怎么样？"
    a = f"It is {sky[0]} in {city_en}, {temp} °C." if en else f"{city_zh}现在{sky[1]}，气温 {temp} °C。"
    args = {"city": city_en, "unit": "celsius"} if rng.random() < 0.5 else {"city": city_en}
    why = f"The tool reports {temp} °C and {sky[0]} skies." if en else f"工具返回 {temp} °C，{sky[1]}。"
    return q, [([_call(rng, "get_weather", args)], [_result({"city": city_en, "temp_c": temp, "sky": sky[0]})])], a, \
        why, ["get_weather"]


def _tool_row(rng, en: bool, reasoning: bool = False) -> dict:
    """user -> assistant tool call(s) -> tool result(s) [-> another call -> result] -> assistant answer, with the
    tools offered (the used ones and sometimes one more); reasoning: the answer carries it (for thinking models)."""
    q, steps, a, why, used = rng.choice([_tool_fx, _tool_stock, _tool_loan, _tool_weather])(rng, en)
    offered = used + [t for t in rng.sample(list(TOOLS), 1) if t not in used]
    msgs = [{"role": "system", "content": _system(rng, "finance", en)}] if rng.random() < 0.3 else []
    msgs.append({"role": "user", "content": q})
    for calls, results in steps:
        lead = "" if rng.random() < 0.7 else ("Let me look that up." if en else "我查一下。")
        msgs += [{"role": "assistant", "content": lead, "tool_calls": calls}, *results]
    answer = {"role": "assistant", "content": a}
    if reasoning or rng.random() < 0.35:
        answer["reasoning_content"] = why
    msgs.append(answer)
    return {"tools": [TOOLS[t] for t in offered], "messages": msgs}


def generate_samples(n: int, seed: int = 0, reasoning: bool = False) -> list[dict]:
    """n raw rows (alpaca or messages dicts) that parse_row accepts; deterministic for (n, seed, reasoning).
    reasoning: every row is a task with worked reasoning, carried as the reply's reasoning_content (for
    Thinking-2507 or hybrid models trained with enable_thinking: true); else about one row in ten has some."""
    if n < 0:
        raise ValueError(f"n must be non-negative, got {n}")
    rng = random.Random(seed)
    domains, weights = zip(*_DOMAIN_WEIGHTS.items())
    rows = []
    for _ in range(n):
        en = rng.random() < 0.5
        if rng.random() < TOOL_SHARE:
            rows.append(_tool_row(rng, en, reasoning))
            continue
        domain = rng.choices(domains, weights)[0]
        task = _task(rng, domain, en)
        if reasoning:
            while not task.reasoning:  # finance and math tasks carry reasoning: draw until one does
                domain = rng.choices(domains, weights)[0]
                task = _task(rng, domain, en)
            rows.append(_reasoning_row(rng, task, domain, en))
            continue
        rows.append(_alpaca(rng, task, domain, en) if rng.random() < 0.5 else _messages(rng, task, domain, en))
    return rows
