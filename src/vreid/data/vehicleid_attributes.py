"""VehicleID's colour and model labels mapped to vreid's AIC colour/type ids.

VehicleID ships ``attribute/color_attr.txt`` and ``attribute/model_attr.txt`` (lines
``<vehicle id> <colour id | model id>``, for about 10,000 of its 26,267 vehicles) with the names in
``attribute/color_names.txt`` (``<name> <id>``: black, blue, gray, red, sliver, white, yellow) and
``attribute/model_names.txt`` (``<Chinese model name> <id>``, 250 models).

**Colour** maps by name to the AIC colour of the same name. VehicleID's ``sliver`` (sic, silver)
has no AIC/VeRi counterpart and stays unknown (its raw name is kept in the dataset's
``extra_attributes``): calling it gray or white would change what those classes mean.

**Type**: VehicleID labels the car model, not a body type. :data:`MODEL_TYPES` is vreid's own
table from the 250 model names to the AIC type of that model's body (sedan, suv, van = microvans
and panel vans, mpv, hatchback, estate, truck, bus). A model sold in several bodies under one name
(e.g. Ford Focus, Mazda 3, Peugeot 307, sold as sedan and hatchback) and the few models whose body
the name does not settle are left out: their images get no type.
"""

from __future__ import annotations

from vreid.data.attributes import AIC_COLORS, AIC_TYPES

#: VehicleID colour name → AIC colour name (``None``: no AIC counterpart, left unknown).
COLOR_NAMES: dict[str, str | None] = {
    "black": "black",
    "blue": "blue",
    "gray": "gray",
    "grey": "gray",
    "red": "red",
    "sliver": None,  # silver (VehicleID's spelling): no AIC/VeRi colour
    "silver": None,
    "white": "white",
    "yellow": "yellow",
}

#: AIC type name → the VehicleID model names (as in ``model_names.txt``) of that body type.
_TYPE_MODELS: dict[str, tuple[str, ...]] = {
    "sedan": (
        "大众-朗逸2006-2011", "奥迪A6L-2012款", "长城-C30-2012款", "雪铁龙-凯旋",
        "日产(尼桑)-天籁2014款", "别克-英朗2010-13款", "现代-伊兰特11款", "雪铁龙-爱丽舍-2014款",
        "本田-思域2012-2013款", "现代-名驭", "海马-M3", "现代-悦动-2008", "比亚迪F6",
        "日产(尼桑)-天籁2007款", "奔驰-S级2011款", "大众-速腾2006-2011款", "马自达6-2008款",
        "大众-桑塔纳2004款", "丰田-凯美瑞2009款", "大众-速腾2012-2014款", "雪佛兰-乐风",
        "雪铁龙-C4L", "马自达6-2011-2013款", "奥迪A4-2009-2012款", "奔驰-E级2012款",
        "别克-君威09-11款", "别克-凯越", "宝马3系2013-2014款", "三菱-蓝瑟2010款", "奇瑞-风云",
        "丰田-凯美瑞2008款", "奇瑞-A5", "日产(尼桑)-轩逸2007-2012新款", "现代-索纳塔11款",
        "现代-悦动-2011", "斯柯达-明锐", "丰田-威驰2008", "长城-C30-2013-2014款", "现代-朗动-2012",
        "丰田-威驰2010-2013", "奇瑞-旗云-2008款", "雪佛兰-景程", "中华-骏捷2007", "奔驰-C级2011款",
        "别克-君越2009-2013款", "丰田-花冠2009款", "雷克萨斯-ES2013-2014款", "荣威350-2011",
        "奥迪A6L-2009款", "丰田-威驰2004", "本田-雅阁2011-2013款", "本田-思域2009款",
        "现代-索纳塔14款", "丰田-凯美瑞2012款", "中华-骏捷2011款", "现代-领翔2009款",
        "标致308-2012-1013款", "奥迪-A8L", "斯柯达-昊锐", "宝马530", "吉利-帝豪", "奥迪A4-2013款",
        "宝马-7系", "雷克萨斯-ES2009-2010款", "宝马五系", "日产(尼桑)-天籁2011款",
        "雷克萨斯-ES2006款", "比亚迪L3", "丰田-凯美瑞2013款", "荣威350-2010款", "比亚迪F3-2007-2011款",
        "起亚-K5-2012款", "丰田-皇冠", "中华-威志", "日产(尼桑)-轩逸-轩逸2007-2012经典款",
        "雪铁龙-爱丽舍2008-2013款", "江淮-和悦2010款", "宝马3系2007-2012款", "雪佛兰-科鲁兹",
        "丰田-卡罗拉2008款", "福特-蒙迪欧", "海马-海福星-2007款", "大众-捷达2008", "标致-408-10-11款",
        "比亚迪G3", "大众-宝来2013-2014", "大众-迈腾2011-2013款", "荣威750-2008款", "荣威550",
        "江淮-同悦A13-2008款", "雪铁龙-C5-2010-2012款", "丰田-花冠2013款", "东南-v3凌悦",
        "海马-福美来", "大众-迈腾2009款", "本田-锋范-2009款", "日产(尼桑)-阳光2011-2014款",
        "起亚-K3-2012款", "丰田-卡罗拉2012款", "现代-伊兰特2007款", "起亚-赛拉图2005-2007款",
        "大众-帕萨特", "大众-朗逸2012-2014", "起亚-赛拉图2008-2012款", "起亚-福瑞迪-福瑞迪2009款",
        "大众-捷达2010-2013", "雪佛兰-迈锐宝", "奇瑞-E5", "大众-桑塔纳2013款", "大众-宝来2008-2012",
        "丰田-锐志2008", "丰田-花冠2011款",
    ),
    "suv": (
        "丰田-普拉多-2004-2006", "起亚-智跑", "现代-途胜-2009", "日产(尼桑)-奇骏-2008款",
        "三菱-欧蓝德2006-2012款", "起亚-索兰托2009-2013款", "丰田-普拉多2010", "丰田-rava-4-2009款",
        "奔驰-GLK级2013款", "沃尔沃XC60", "哈弗-哈弗H5-2011-2013款", "现代-胜达13款",
        "奇瑞-瑞虎2011款", "奥迪-Q5", "现代-胜达2012款", "哈弗-哈弗H3-2012款", "现代-途胜-2008",
        "雪佛兰-科帕奇", "比亚迪S6", "沃尔沃-xc90", "别克-昂科拉", "宝马X5", "日产(尼桑)-奇骏-2012款",
        "斯巴鲁-森林人2012款", "大众-途观", "现代-ix35", "奥迪-Q7", "宝马X6", "三菱-劲炫",
        "起亚-狮跑2012-2013款", "丰田-汉兰达", "哈弗-哈弗H6", "现代-ix35-2012款", "凯迪拉克SRX",
        "宝马X3", "斯巴鲁-森林人2008款", "奇瑞-瑞虎2009-2013", "jeep-指南者", "宝马-X1",
        "起亚-狮跑2007-2009款", "本田-思威2005-2010款", "雷诺-科雷傲2012款", "雷诺-科雷傲2009-2010款",
        "本田-思威2012-2013款", "福特-翼博", "路虎-发现2010-2014款", "雷诺-科雷傲2013-2014款",
        "东风风行-x5", "日产(尼桑)-逍客-逍客2011-2012款", "长城-M4-2012款", "奔驰-M级2012款",
    ),
    "hatchback": (
        "本田-飞度-2008款", "斯柯达-晶锐", "MG5", "比亚迪F0", "海马-王子", "马自达2", "铃木-雨燕2012-2013款",
        "奇瑞-QQ-2007-2012款", "别克-英朗XT", "雪铁龙-C2", "MINI-cooper-2008-2010款",
        "日产(尼桑)-骐达-骐达2008-2009款", "日产(尼桑)-骐达-骐达-2011款", "大众-波罗", "丰田-雅力士",
        "铃木-北斗星", "铃木-雨燕2007-2008款", "大众-高尔夫2006-2012", "铃木-奥拓2013款",
    ),
    "estate": ("斯巴鲁-傲虎2010款",),
    "mpv": (
        "奔驰-R级2010款", "五菱宏光", "别克-GL8-06-08款", "海马-普力马2010款", "东风风行-菱智2014款",
        "本田-奥德赛-2011款", "江淮-瑞风-2012款", "金杯-阁瑞斯MPV-2008款", "东风风度-帅客",
        "别克-GL82011-2013款", "东风风行-菱智2013款", "江淮-和悦RS-2010款",
    ),
    "van": (
        "五菱荣光2008款", "福田面包车", "金杯-海狮-2013款", "依维柯-TurboDaily", "长安之星6363系列",
        "长安之星2代", "长安星光SC6345BFA", "昌河-福瑞达", "金杯-海狮-2008款", "五菱之光2007款",
        "东南-得利卡", "五菱之光2013款", "依维柯-宝迪", "依维柯-都灵v", "哈飞-民意", "五菱扬光",
        "长安之星", "长安星光4500系列",
    ),
    "truck": (
        "江铃凯运轻卡", "解放-赛麒麟", "解放-悍威（J5M）重卡", "东风重货车", "解放-赛龙中卡",
        "福田-奥铃TX", "福田-奥铃CTX",
    ),
    "bus": ("申沃-swb6940", "申沃-sw6127lng"),
}  # fmt: skip

MODEL_TYPES: dict[str, str] = {
    model: aic_type for aic_type, models in _TYPE_MODELS.items() for model in models
}
"""VehicleID model name → AIC type name; models not listed have no type."""

assert all(t in AIC_TYPES for t in _TYPE_MODELS), "type names must be AIC type names"
assert all(c is None or c in AIC_COLORS for c in COLOR_NAMES.values())
assert len(MODEL_TYPES) == sum(map(len, _TYPE_MODELS.values())), "a model listed twice"


def color_id(name: str) -> int | None:
    """AIC colour id of a VehicleID colour name (``None``: unknown or no counterpart)."""
    aic = COLOR_NAMES.get(name.strip().lower())
    return None if aic is None else AIC_COLORS.index(aic)


def type_id(model_name: str) -> int | None:
    """AIC type id of a VehicleID model name (``None``: not in :data:`MODEL_TYPES`)."""
    aic = MODEL_TYPES.get(model_name.strip())
    return None if aic is None else AIC_TYPES.index(aic)
