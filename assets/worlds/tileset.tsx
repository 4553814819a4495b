<?xml version="1.0" encoding="UTF-8"?>
<tileset version="1.10" tiledversion="1.10.2" name="landworld" tilewidth="32" tileheight="32" tilecount="17" columns="8">
 <image source="tileset.png" width="256" height="96"/>
 <tile id="0" type="grass">
  <properties>
   <property name="kind" value="grass"/>
   <property name="walkable" type="bool" value="true"/>
  </properties>
 </tile>
 <tile id="1" type="grass_dark">
  <properties>
   <property name="kind" value="grass"/>
   <property name="walkable" type="bool" value="true"/>
  </properties>
 </tile>
 <tile id="2" type="flowers">
  <properties>
   <property name="kind" value="grass"/>
   <property name="walkable" type="bool" value="true"/>
  </properties>
 </tile>
 <tile id="3" type="sand">
  <properties>
   <property name="kind" value="sand"/>
   <property name="walkable" type="bool" value="true"/>
  </properties>
 </tile>
 <tile id="4" type="water">
  <properties>
   <property name="kind" value="water"/>
   <property name="walkable" type="bool" value="false"/>
  </properties>
 </tile>
 <tile id="5" type="deep_water">
  <properties>
   <property name="kind" value="water"/>
   <property name="walkable" type="bool" value="false"/>
  </properties>
 </tile>
 <tile id="6" type="wall">
  <properties>
   <property name="kind" value="wall"/>
   <property name="walkable" type="bool" value="false"/>
  </properties>
 </tile>
 <tile id="7" type="dirt_path">
  <properties>
   <property name="kind" value="path"/>
   <property name="walkable" type="bool" value="true"/>
  </properties>
 </tile>
 <tile id="8" type="wood_floor">
  <properties>
   <property name="kind" value="floor"/>
   <property name="walkable" type="bool" value="true"/>
  </properties>
 </tile>
 <tile id="9" type="stone_floor">
  <properties>
   <property name="kind" value="floor"/>
   <property name="walkable" type="bool" value="true"/>
  </properties>
 </tile>
 <tile id="10" type="cobblestone">
  <properties>
   <property name="kind" value="path"/>
   <property name="walkable" type="bool" value="true"/>
  </properties>
 </tile>
 <tile id="11" type="bridge_east_west">
  <properties>
   <property name="kind" value="path"/>
   <property name="walkable" type="bool" value="true"/>
  </properties>
 </tile>
 <tile id="12" type="bridge_north_south">
  <properties>
   <property name="kind" value="path"/>
   <property name="walkable" type="bool" value="true"/>
  </properties>
 </tile>
 <tile id="13" type="soil">
  <properties>
   <property name="kind" value="grass"/>
   <property name="walkable" type="bool" value="true"/>
  </properties>
 </tile>
 <tile id="14" type="tree">
  <properties>
   <property name="kind" value="wall"/>
   <property name="walkable" type="bool" value="false"/>
  </properties>
 </tile>
 <tile id="15" type="rock">
  <properties>
   <property name="kind" value="wall"/>
   <property name="walkable" type="bool" value="false"/>
  </properties>
 </tile>
 <tile id="16" type="hedge">
  <properties>
   <property name="kind" value="wall"/>
   <property name="walkable" type="bool" value="false"/>
  </properties>
 </tile>
</tileset>
